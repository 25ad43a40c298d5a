"""The Compare page (a Streamlit page script)."""

from workbench.ui.app import registry
from workbench.ui.compare_page import compare_page

compare_page(registry())
