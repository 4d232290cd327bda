"""Model input features: 80-dim Kaldi fbank with seeded dither and mean normalisation."""
