"""KD Workbench in the browser: ``streamlit run app.py``."""

from workbench.ui.app import main

main()
