"""Using a trained run: evaluate, predict, encode, search, export, as a
library (the tools in `tools/` parse flags and print). Every one starts
from `artifacts.load_run`."""
