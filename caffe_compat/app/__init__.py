"""The age and gender application on top of the core: faces, preprocessing, predictor, zoo weights,
Adience evaluation, runs over many photos (Ray). The core (io, ir, shapes, passes, converters,
verify) never imports it."""
