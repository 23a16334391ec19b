"""The small, stable core: plugin contract, data, recipes, pipeline. No model code."""
