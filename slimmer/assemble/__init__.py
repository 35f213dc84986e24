"""Image assembly: what `pack`, `build` and `slim` put in an image and why (placing,
baseline, runtime rules, recipes, provenance)."""
