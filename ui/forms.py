"""Widget values that last the session, across page switches and changing option lists.

Streamlit forgets a widget's value when a page that does not draw it runs: going to another page and
back resets a form to its defaults. :func:`remembered` keeps each value in a store of its own in session
state, which Streamlit leaves alone, and draws the widget again with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

MEMORY = "_remembered"  # not a widget key, so Streamlit never clears it


def remembered(key: str, default, *, options: Sequence | None = None) -> dict:
    """The keyword arguments that draw widget ``key`` with its value for this session.

    The widget's current value is kept; when Streamlit has dropped it (another page ran), the value kept
    from before, else ``default``, is the widget's starting value. A value no longer among ``options``
    gives way to ``default``. The value is given as the widget's own ``value`` (``index`` for a select box),
    never written into session state, so Streamlit never sees two sources for it.

    Args:
        key: the widget's key.
        default: its value the first time, such as the config's default.
        options: the choices of a select box; then ``index`` is returned instead of ``value``.

    Returns:
        ``{"key": key, "value": value}``, or ``{"key": key, "index": position}`` with ``options``.
    """
    memory = st.session_state.setdefault(MEMORY, {})
    value = st.session_state[key] if key in st.session_state else memory.get(key, default)
    if options is not None and value not in options:
        value = default if default in options else None
    memory[key] = value
    if options is None:
        return {"key": key, "value": value}
    return {"key": key, "index": None if value is None else list(options).index(value)}
