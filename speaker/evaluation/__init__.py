"""Verification evaluation: whole-utterance embeddings, cosine scoring and AS-norm, EER,
minDCF, DET curves and speaker-bootstrap intervals."""
