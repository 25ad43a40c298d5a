"""The Explore page (a Streamlit page script)."""

from workbench.ui.app import explore_page

explore_page()
