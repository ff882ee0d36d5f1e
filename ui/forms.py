"""Widget values that last the session, across page switches and changing option lists.

Streamlit forgets a widget's value when a page that does not draw it runs: going to another page and
back resets a form to its defaults. :func:`remembered` keeps each value in a store of its own in session
state, which Streamlit leaves alone, and puts it back before the widget is drawn again.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

MEMORY = "_remembered"  # not a widget key, so Streamlit never clears it


def remembered(key: str, default, *, options: Sequence | None = None) -> str:
    """The widget key ``key``, with its value for this session in place; call it for the widget's ``key=``.

    The widget's current value is kept; when Streamlit has dropped it (another page ran), the value kept
    from before, else ``default``, is put back. A value no longer among ``options`` gives way to ``default``.
    Give the widget no value or index of its own: session state holds it.

    Args:
        key: the widget's key.
        default: its value the first time, such as the config's default.
        options: the choices of a select box, when its value must be one of them.

    Returns:
        ``key``.
    """
    memory = st.session_state.setdefault(MEMORY, {})
    value = st.session_state[key] if key in st.session_state else memory.get(key, default)
    if options is not None and value not in options:
        value = default
    if key not in st.session_state or st.session_state[key] != value:
        st.session_state[key] = value
    memory[key] = value
    return key
