"""The embedded offline world: image sets rendered from, or read out of, files that ship with pip packages.

- `flags` (the default fine-grained target): layouts filled with ordered colours, photographed at
  random size, proportions, angle, lighting; classes differ in one colour, their order or the layout.
- `glyphs` (a harder target): Unicode letters drawn from matplotlib's bundled DejaVu and STIX fonts.
- the "web" the teacher pretrains on (`web`: declared subsets; `builders`: their images): shapes
  (one coloured shape per scene, captions true of the image), Animal-MNIST silhouettes (PyPI
  `animal-mnist`, MIT), Unicode symbols from the same fonts, and textile-like patterns with captions.

One module per domain; `common` holds what they share. This file imports nothing, so reading the
declarations (`web`) never loads a renderer.
"""
