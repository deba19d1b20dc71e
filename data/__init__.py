"""lunarseg.data: the synthetic lunar scene generator and the loader for the real Kaggle layout."""
