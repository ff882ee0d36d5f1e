"""RadiologyAI: `streamlit run streamlit_app.py` starts the app; this file only declares its pages."""

import streamlit as st

st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
        st.Page("pages/1_Classify.py", title="Classify", icon=":material/radiology:", url_path="Classify"),
        st.Page("pages/2_Evaluation.py", title="Evaluation", icon=":material/monitoring:", url_path="Evaluation"),
        st.Page("pages/3_Training.py", title="Training", icon=":material/model_training:", url_path="Training"),
        st.Page("pages/4_Dataset.py", title="Dataset", icon=":material/folder_open:", url_path="Dataset"),
    ]
).run()
