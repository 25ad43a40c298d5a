"""User interfaces: everything that imports ipywidgets or streamlit lives here."""
