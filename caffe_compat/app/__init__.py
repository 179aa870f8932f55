"""The age and gender application on top of the core: faces, preprocessing, predictor, zoo weights,
Adience evaluation. The core (io, ir, shapes, passes, converters, verify) never imports it."""
