"""The import panel: a model file uploaded, its class order checked, and brought in as a run."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from radiology import registry
from radiology.errors import RadiologyError
from radiology.settings import runs_dir


def import_messages(key: str) -> None:
    """Shows, once, the outcome of the last import made with ``import_model_panel(key)``."""
    for kind, message in st.session_state.pop(f"{key}_done", []):
        getattr(st, kind)(message)


def import_model_panel(key: str, *, promote_default: bool = False) -> None:
    """Upload a ``.keras`` or Keras 2 ``.h5`` model, check its class order, and import it as a run.

    The class order the file carries, or the notebook's order it is assumed to have, is shown and can be
    changed before importing. A successful import reruns the page so run lists include the new run; the page
    shows its outcome with :func:`import_messages`, outside any expander the panel sits in.
    """
    from radiology.imports import MAX_UPLOAD_MB, describe, import_model, import_record, parse_class_order

    upload = st.file_uploader(
        "Model file: `.keras`, or Keras 2 `.h5` such as the notebook's `best_model.h5`",
        type=["keras", "h5", "hdf5"],
        max_upload_size=MAX_UPLOAD_MB,
        key=f"{key}_file_{st.session_state.get(f'{key}_imports', 0)}",  # a new key empties it after an import
        help="Loaded with Keras safe mode: files with Lambda layers are refused. Stored only in the new run's folder.",
    )
    if upload is None:
        return
    data = upload.getvalue()
    described = st.session_state.get(f"{key}_described")
    try:
        if described is None or described[0] != upload.file_id:
            # checks every entry's checksum: once per upload, not on every rerun while it waits
            described = (upload.file_id, describe(data, upload.name))
            st.session_state[f"{key}_described"] = described
        info = described[1]
    except RadiologyError as exc:
        st.error(str(exc))
        return
    default = ", ".join(info.class_names)
    if info.has_metadata:
        st.info(f"`{upload.name}` carries its metadata. Class order (outputs 0, 1, 2…): **{default}**.")
    else:
        st.warning(
            f"`{upload.name}` carries no metadata: the notebook's alphabetical class order **{default}** is "
            "assumed for outputs 0, 1, 2. If the model was trained with another order, set it below."
        )
    with st.form(f"{key}_form"):
        order = st.text_input("Class order (output 0, 1, 2…)", value=default)
        name = st.text_input("Name", value=Path(upload.name).stem)
        promote = st.checkbox("Make it the active model", value=promote_default)
        submitted = st.form_submit_button("Import model", type="primary")
    if not submitted:
        return
    try:
        names = parse_class_order(order)
        with st.spinner("Checking and saving the model…"):
            run = import_model(
                data,
                filename=upload.name,
                runs_dir=runs_dir(),
                name=name.strip() or None,
                class_names=None if names == info.class_names else names,
            )
    except RadiologyError as exc:
        st.error(str(exc))
        return
    record = import_record(run) or {}
    done = [
        (
            "success",
            f"Imported {upload.name} as run {run.id}: classes {', '.join(record.get('class_names', []))} "
            f"({record.get('class_order')}).",
        )
    ]
    done += [("warning", w) for w in record.get("warnings", [])]
    if promote:
        registry.set_active(run, runs_dir())
        done.append(("success", f"{run.id} is now the active model. Classify uses it from now on."))
    st.session_state[f"{key}_done"] = done
    st.session_state[f"{key}_imports"] = st.session_state.get(f"{key}_imports", 0) + 1
    st.rerun()
