"""What a pretrained teacher expects as input, and the dump's check that the corpus fits.

entkd renders every view at the manifest's sample rate and, for ``input_kind="fbank"``
teachers, computes wespeaker-style Kaldi fbank (:func:`speaker.features.fbank`: 80 bins,
25 ms / 10 ms Hamming frames, dither 1 from the row seed, mean-normalised). A teacher
trained on another front-end either computes it itself from the waveform
(``input_kind="wave"``, e.g. speechbrain's own Fbank) or cannot be served; a sample-rate
mismatch is never converted (the cached views are defined at the corpus's rate).

Example::

    check_frontend(teacher, sample_rate=16000)  # UserError if the teacher wants 8 kHz
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from speaker.features.fbank import FRAME_LENGTH_MS, FRAME_SHIFT_MS
from store.errors import UserError

ENTKD_FBANK = {"num_mel_bins": 80, "frame_length": FRAME_LENGTH_MS, "frame_shift": FRAME_SHIFT_MS}


@dataclass(frozen=True)
class Frontend:
    """A teacher's input: ``kind`` is ``"kaldi_fbank"`` (entkd computes it: ``ENTKD_FBANK``)
    or ``"own"`` (the teacher takes the waveform and computes ``description`` itself)."""

    kind: str
    sample_rate: int
    description: str

    def to_dict(self) -> dict:
        return asdict(self)


def kaldi_fbank_frontend(sample_rate: int, fbank_args: dict, where: str) -> Frontend:
    """The front-end of a teacher trained on Kaldi fbank with ``fbank_args``; refuses settings
    entkd's fbank does not compute (it has no other mel count or frame sizes)."""
    differing = {k: fbank_args[k] for k, v in ENTKD_FBANK.items()
                 if k in fbank_args and float(fbank_args[k]) != float(v)}
    if differing:
        raise UserError(
            f"{where}: the teacher was trained on fbank with {differing}; entkd computes only "
            f"{ENTKD_FBANK} and cannot convert")
    return Frontend("kaldi_fbank", int(sample_rate),
                    "Kaldi fbank 80 bins, 25/10 ms hamming, mean-normalised")


def check_frontend(frontend: Frontend | None, sample_rate: int, teacher: str) -> None:
    """Refuse a dump whose audio is not at the rate the teacher was trained on."""
    if frontend is not None and frontend.sample_rate != sample_rate:
        raise UserError(
            f"teacher {teacher} expects {frontend.sample_rate} Hz audio but the manifest is at "
            f"{sample_rate} Hz; entkd does not resample views, so use a corpus at "
            f"{frontend.sample_rate} Hz")
