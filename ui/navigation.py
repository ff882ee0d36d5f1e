"""The app's navigation and the header every page carries."""

from __future__ import annotations

import streamlit as st

from radiology import DISCLAIMER

# (file, title, icon, URL path): the app's pages, in navigation order; the first is the default.
PAGES = (
    ("pages/home.py", "Home", ":material/home:", "home"),
    ("pages/1_Classify.py", "Classify", ":material/radiology:", "Classify"),
    ("pages/2_Evaluation.py", "Evaluation", ":material/monitoring:", "Evaluation"),
    ("pages/3_Training.py", "Training", ":material/model_training:", "Training"),
    ("pages/4_Dataset.py", "Dataset", ":material/folder_open:", "Dataset"),
)


def navigation():
    """Declares the app's pages with ``st.navigation`` and returns the page to run."""
    return st.navigation(
        [
            st.Page(path, title=title, icon=icon, url_path=url, default=i == 0)
            for i, (path, title, icon, url) in enumerate(PAGES)
        ]
    )


def _leave_pages_directory_mode() -> None:
    """Replaces Streamlit's automatic page list from ``pages/`` with the app's navigation.

    Streamlit starts every server in its old "pages directory" mode when a ``pages/`` folder sits beside
    the main script, and leaves it only when a script calls ``st.navigation``. So when the first visitor
    opens a deep link such as ``/Classify``, Streamlit runs that page file directly, without
    ``streamlit_app.py``, and shows its own list of the folder (streamlit PR 10276 discusses this). The
    page then declares the real navigation, which also ends that mode for the whole process, and
    reruns: the rerun goes through ``streamlit_app.py`` to the same URL path.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        navigation()
        st.rerun()


def page_header(title: str) -> None:
    """Page config, title and the research-demo notice every page carries."""
    _leave_pages_directory_mode()
    st.set_page_config(page_title=f"{title} · RadiologyAI", page_icon="🩻", layout="wide")
    st.title(title)
    st.warning(DISCLAIMER, icon=":material/warning:")  # Material Symbols ship with Streamlit; emoji fonts may not
