"""Streamlit entry used by ``workbench app`` when the package is installed without app.py."""

from workbench.ui.app import main

main()
