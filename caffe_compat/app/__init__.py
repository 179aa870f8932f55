"""The age and gender application: predictors, photo reading and runs over many photos."""
