"""Acoustic features of a clip's audio track: log-mel filterbank, pitch, voicing and energy.

The audio is decoded by ffmpeg to mono ``sample_rate`` Hz (`mmckd.extract.media.iter_audio`) and processed
in a streaming way, chunk by chunk (30 s by default): the samples a 10 ms hop still needs from the next
chunk are carried over, so the result is the same as computing over the whole signal at once, and memory
stays bounded whatever the length of the clip.

Analysis (all with torch / torchaudio.functional; no torchaudio I/O):

* Hops of ``hop_ms`` (10 ms, i.e. 100 Hz). Hop k stands for the samples [k*hop, (k+1)*hop) and its
  analysis windows are centred on that interval; the signal is zero-padded at both ends. A clip of N
  samples has ceil(N / hop) hops.
* Per hop: the power spectrum of a ``win_ms`` (25 ms) Hann window, mapped to ``n_mels`` HTK mel bands
  (`torchaudio.functional.melscale_fbanks`, 0 Hz to Nyquist); the mean square of the same window; and
  the normalised cross-correlation (NCCF) of a longer window (two periods of ``f0_min``) over the lags of
  [f0_min, f0_max]. The pitch lag is the shortest NCCF peak reaching 90 % of the highest one (against
  octave-down errors), refined by parabolic interpolation.
* Hops are mean-pooled to ``frame_rate`` (25 Hz: 4 hops -> one 40 ms frame). Frame j covers the samples
  [j*P, (j+1)*P) with P = sample_rate / frame_rate; its timestamp is the CENTRE of that interval,
  (j + 0.5) / frame_rate seconds. The last frame may pool fewer hops. A clip of N samples has
  ceil(ceil(N / hop) / (hops per frame)) frames (about duration * frame_rate).

Feature dimensions (``AUDIO_FEATURE_NAMES``; dim = n_mels + 3):

====================  ==========================================================================
``mel_00..mel_NN``    natural log of the mel band power (power of the float signal in [-1, 1],
                      floored at 1e-10), mean over the frame's hops
``f0_hz``             fundamental frequency in Hz, mean over the frame's VOICED hops; 0 when none
                      of its hops is voiced. Always 0 or within [f0_min, f0_max]
``voicing``           voicing strength in [0, 1]: the NCCF at the pitch lag (clipped to [0, 1]; 0
                      for hops quieter than ``silence_dbfs``), mean over the frame's hops. A hop is
                      voiced when its voicing >= VOICING_THRESHOLD and it is louder than silence_dbfs
``log_energy``        natural log of the mean square of the 25 ms window (floored at 1e-10), mean
                      over the frame's hops
====================  ==========================================================================

Levels: the level of a hop is 10*log10(mean square) in dBFS (a full-scale square wave is 0 dBFS, a
full-scale sine -3 dBFS). A clip whose loudest hop is below ``silence_dbfs`` has a silent audio track and
raises `ModalityMissing`, as do a file without an audio track and one whose decoded audio is empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF

from mmckd.extract.config import AudioConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.media import MediaInfo, iter_audio
from mmckd.feature_file import Sequence

VOICING_THRESHOLD = 0.5  # NCCF peak from which a (loud enough) hop counts as voiced
OCTAVE_TOLERANCE = 0.9  # shortest NCCF peak within this fraction of the highest is the pitch lag
_POWER_FLOOR = 1e-10  # floor of the mel power and the mean square before the log
_LEVEL_FLOOR_DB = -120.0  # level reported for digital silence


def audio_feature_names(n_mels: int) -> tuple[str, ...]:
    """One name per feature dimension for n_mels mel bands."""
    return tuple(f"mel_{i:02d}" for i in range(n_mels)) + ("f0_hz", "voicing", "log_energy")


AUDIO_FEATURE_NAMES: tuple[str, ...] = audio_feature_names(AudioConfig().n_mels)


@dataclass(frozen=True)
class AudioFeatures:
    """Pooled features of one signal: features (frames, dim) f4, timestamps (frames,) s, and signal facts."""

    features: np.ndarray
    timestamps: np.ndarray
    n_samples: int
    max_level_dbfs: float


class AudioExtractor:
    """Computes the audio `Sequence` of a clip (see the module docstring for what each dimension holds)."""

    def __init__(self, config: AudioConfig, chunk_seconds: float = 30.0) -> None:
        c = config  # validated by AudioConfig itself (mmckd.extract.config)
        self.config = config
        self.dim: int = config.dim
        self.feature_names: tuple[str, ...] = audio_feature_names(c.n_mels)
        sr = c.sample_rate
        self.hop = c.hop_samples
        self.win = c.win_samples
        frame = c.frame_samples
        self.pool = frame // self.hop  # hops per output frame
        self.chunk_samples = max(frame, int(chunk_seconds * sr) // frame * frame)

        self.lag_min = max(2, math.floor(sr / c.f0_max))
        self.lag_max = math.ceil(sr / c.f0_min)
        # analysis frame: the pitch window (two periods of f0_min, plus the interpolation neighbour),
        # which holds the mel window in its middle; both are centred on the hop's own samples
        self.frame_len = max(self.win, 2 * (self.lag_max + 1))
        self.left_pad = self.frame_len // 2 - self.hop // 2
        self.mel_offset = (self.frame_len - self.win) // 2
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.acf_fft = 1 << (self.frame_len + self.lag_max + 1).bit_length()  # no circular wrap-around
        self.window = torch.hann_window(self.win, periodic=True)
        # the power spectrum of the window zero-padded to n_fft equals that of the n_fft frame samples around
        # it under the window zero-padded the same way (when those samples exist)
        side = (self.n_fft - self.win) // 2
        self.fft_start = self.mel_offset - side if self.mel_offset - side + self.n_fft <= self.frame_len else -1
        self.fft_window = torch.nn.functional.pad(self.window, (side, self.n_fft - self.win - side))
        self.fbank = AF.melscale_fbanks(self.n_fft // 2 + 1, 0.0, sr / 2, c.n_mels, sr, norm=None, mel_scale="htk")
        self.energy_floor = 10 ** (c.silence_dbfs / 10)  # mean square of a hop at silence_dbfs

    # public ---------------------------------------------------------------------------------
    def extract(self, info: MediaInfo) -> Sequence:
        """Features of the clip's first audio track; ModalityMissing when absent, empty or silent."""
        if not info.has_audio:
            raise ModalityMissing("no audio track")
        return self.extract_chunks(iter_audio(info, self.config.sample_rate, self.chunk_samples))

    def extract_chunks(self, chunks: Iterable[np.ndarray]) -> Sequence:
        """Features of a mono float signal in [-1, 1] at sample_rate given as consecutive chunks."""
        res = self.compute(chunks)
        if res.n_samples == 0:
            raise ModalityMissing("no audio samples decoded (empty audio track)")
        if res.max_level_dbfs < self.config.silence_dbfs:
            raise ModalityMissing(f"silent audio track (max level {res.max_level_dbfs:.1f} dBFS)")
        return Sequence(res.features, timestamps=res.timestamps)

    def compute(self, chunks: Iterable[np.ndarray]) -> AudioFeatures:
        """Pooled features of a signal given in chunks of any sizes (no silence check).

        Only whole groups of `pool` hops are computed before the end of the stream; the samples they do
        not consume stay in the buffer, so chunking never changes the result.
        """
        buf = np.zeros(self.left_pad, np.float32)
        n_samples = 0
        hops_done = 0
        parts: list[torch.Tensor] = []
        max_energy = 0.0
        for chunk in self._bounded(chunks):
            n_samples += len(chunk)
            buf = np.concatenate([buf, chunk])
            ready = (len(buf) - self.frame_len) // self.hop + 1 if len(buf) >= self.frame_len else 0
            m = ready // self.pool * self.pool
            if m:
                hops, energy = self._hop_features(buf[: (m - 1) * self.hop + self.frame_len], m)
                parts.append(self._pool(hops))
                max_energy = max(max_energy, float(energy.max()))
                buf = buf[m * self.hop :]
                hops_done += m
        rest = -(-n_samples // self.hop) - hops_done
        if rest > 0:
            need = (rest - 1) * self.hop + self.frame_len
            buf = np.pad(buf[:need], (0, max(0, need - len(buf))))
            hops, energy = self._hop_features(buf, rest)
            parts.append(self._pool(hops))
            max_energy = max(max_energy, float(energy.max()))
        feats = torch.cat(parts).numpy() if parts else np.zeros((0, self.dim), np.float32)
        frame_s = self.pool * self.hop / self.config.sample_rate
        timestamps = (np.arange(len(feats)) + 0.5) * frame_s
        level = 10 * math.log10(max_energy) if max_energy > 0 else _LEVEL_FLOOR_DB
        return AudioFeatures(feats.astype(np.float32), timestamps, n_samples, max(level, _LEVEL_FLOOR_DB))

    # internals ------------------------------------------------------------------------------
    def _bounded(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The non-empty chunks as float32, long ones cut to chunk_samples (bounds the work arrays)."""
        for chunk in chunks:
            chunk = np.asarray(chunk, np.float32).reshape(-1)
            for start in range(0, len(chunk), self.chunk_samples):
                yield chunk[start : start + self.chunk_samples]

    def _hop_features(self, padded: np.ndarray, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-hop features (m, dim) of m hops whose analysis frames start every hop in `padded`.

        Returns the features (f0 is NaN where unvoiced, for pooling) and the hops' mean squares.
        """
        x = torch.from_numpy(np.ascontiguousarray(padded))
        frames = x.unfold(0, self.frame_len, self.hop)[:m]  # (m, frame_len), a view
        short = frames[:, self.mel_offset : self.mel_offset + self.win]
        energy = (short * short).mean(1)
        if self.fft_start >= 0:  # the n_fft samples around the window are in the frame: no zero-padding copy
            spec = torch.fft.rfft(frames[:, self.fft_start : self.fft_start + self.n_fft] * self.fft_window)
        else:
            spec = torch.fft.rfft(short * self.window, n=self.n_fft)
        power = spec.real * spec.real + spec.imag * spec.imag
        log_mel = torch.log((power @ self.fbank).clamp_min(_POWER_FLOOR))

        f0, voicing = self._pitch(frames)
        loud = energy >= self.energy_floor
        voicing = torch.where(loud, voicing, torch.zeros_like(voicing))
        voiced = loud & (voicing >= VOICING_THRESHOLD)
        f0 = torch.where(voiced, f0, torch.full_like(f0, math.nan))
        log_energy = torch.log(energy.clamp_min(_POWER_FLOOR))
        return torch.cat([log_mel, f0[:, None], voicing[:, None], log_energy[:, None]], 1), energy

    def _pitch(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 (Hz) and NCCF peak in [0, 1] of each analysis frame (m, frame_len)."""
        n = self.frame_len
        p = torch.zeros(len(frames), self.acf_fft)  # zero-padded against circular wrap-around
        p[:, :n] = frames - frames.mean(1, keepdim=True)
        spec = torch.fft.rfft(p)
        acf = torch.fft.irfft(spec.real * spec.real + spec.imag * spec.imag, n=self.acf_fft)
        lo, hi = self.lag_min - 1, self.lag_max + 2  # lags lo..hi-1: one extra each side for the peak tests
        cs = torch.nn.functional.pad((p[:, :n] * p[:, :n]).cumsum(1), (1, 0))  # cs[:, i] = sum of p[:, :i]^2
        e_head = cs[:, n - hi + 1 : n - lo + 1].flip(1)  # energy of p[:, :n-lag]
        e_tail = cs[:, n : n + 1] - cs[:, lo:hi]  # energy of p[:, lag:]
        nccf = acf[:, lo:hi] / torch.sqrt((e_head * e_tail).clamp_min(1e-20))
        left, mid, right = nccf[:, :-2], nccf[:, 1:-1], nccf[:, 2:]
        best = mid.amax(1, keepdim=True)
        # local peaks near the best (the best itself counts even at the range's edge); take the shortest lag
        candidate = (((mid >= left) & (mid > right)) | (mid >= best)) & (mid >= OCTAVE_TOLERANCE * best)
        i = candidate.to(torch.uint8).argmax(1)  # first True
        a, b, c = (nccf.gather(1, (i + k)[:, None])[:, 0] for k in (0, 1, 2))
        denom = a - 2 * b + c
        shift = torch.where(denom < 0, 0.5 * (a - c) / denom.clamp_max(-1e-12), torch.zeros_like(b)).clamp(-0.5, 0.5)
        lag = (self.lag_min + i).to(torch.float32) + shift
        f0 = (self.config.sample_rate / lag).clamp(self.config.f0_min, self.config.f0_max)
        return f0, b.clamp(0.0, 1.0)

    def _pool(self, hops: torch.Tensor) -> torch.Tensor:
        """Mean of each group of `pool` hops (last group may be short); f0 averages its voiced hops only."""
        m = len(hops)
        groups = -(-m // self.pool)
        if groups * self.pool != m:
            hops = torch.cat([hops, torch.full((groups * self.pool - m, hops.shape[1]), math.nan)])
        pooled = torch.nanmean(hops.view(groups, self.pool, -1), 1)
        return torch.nan_to_num(pooled, nan=0.0)  # f0 of a frame with no voiced hop
