"""Library functions behind the commands that are neither core nor application: convert, inspect,
synth (and its fillers), the generated support table."""
