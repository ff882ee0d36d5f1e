"""RadiologyAI: `streamlit run streamlit_app.py` starts the app; its pages are declared in ``ui.PAGES``."""

import ui

ui.navigation().run()
