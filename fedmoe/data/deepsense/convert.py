"""Sensor frames to the fixed-size inputs of fedmoe: camera raster, lidar range scan, radar map."""

from __future__ import annotations

import numpy as np

MIN_LIDAR_RANGE_M = 0.1
"""Lidar points closer than this (no-return markers at the origin) are ignored."""
RADAR_DB_FLOOR = -240.0
"""Radar map cells of zero magnitude map to this many dB."""


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Box-filter (mean of each block) or, when upsampling, nearest-neighbour along ``axis``."""
    n = x.shape[axis]
    starts = (np.arange(size) * n) // size
    if n < size:
        return np.take(x, starts, axis=axis)
    sums = np.add.reduceat(x, starts, axis=axis)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    shape = [1] * x.ndim
    shape[axis] = size
    return sums / counts.reshape(shape)


def box_resize(image: np.ndarray, size: int) -> np.ndarray:
    """An image (H, W), (H, W, 3|4) or (3, H, W) -> (3, size, size) uint8.

    Each output pixel is the mean of its block of input pixels (area averaging; the
    aspect ratio is not kept). A 3-D array is channels-first only when its first axis
    is 3 and its last is longer than 4. Integer images are taken as 0..255; float images as
    0..255 unless their maximum is <= 1, then as 0..1. An alpha channel is dropped,
    grey is replicated to three channels.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3|4) or (3, H, W), got {np.shape(image)}")
    img = img[..., :3]
    if not np.issubdtype(img.dtype, np.number) or np.issubdtype(img.dtype, np.complexfloating):
        raise ValueError(f"image has non-numeric dtype {img.dtype}")
    data = img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise ValueError("image has non-finite pixel values")
        if data.size and data.max() <= 1.0:
            data = data * 255.0
    out = _resize_axis(_resize_axis(data, size, 0), size, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def lidar_range_scan(points: np.ndarray, rays: int, max_range_m: float, fov_deg: float = 360.0) -> np.ndarray:
    """A point cloud (M, >=3: x, y, z, ...) or range profile (K,) -> (rays,) float32 range scan.

    Point cloud: each point's azimuth ``atan2(y, x)`` (from the sensor's +x axis,
    counter-clockwise) falls in one of ``rays`` equal sectors spanning
    ``[-fov/2, fov/2)``; a ray is the smallest horizontal range ``hypot(x, y)`` of its
    points, ``max_range_m`` when it has none. Points with non-finite coordinates or
    closer than :data:`MIN_LIDAR_RANGE_M` are ignored; z is not used.

    Range profile (a 1-D array of ranges over equally spaced angles): linearly
    resampled to ``rays`` values; NaN reads as ``max_range_m``.

    Ranges are clipped to ``[0, max_range_m]``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1:
        prof = np.where(np.isfinite(pts), pts, max_range_m)
        if len(prof) == 0:
            raise ValueError("empty lidar range profile")
        pos = np.linspace(0.0, len(prof) - 1.0, rays)
        scan = np.interp(pos, np.arange(len(prof)), prof)
        return np.clip(scan, 0.0, max_range_m).astype(np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"expected a point cloud (M, >=3) or a range profile (K,), got shape {pts.shape}")
    x, y = pts[:, 0], pts[:, 1]
    rng = np.hypot(x, y)
    keep = np.isfinite(rng) & (rng >= MIN_LIDAR_RANGE_M)
    az = np.degrees(np.arctan2(y[keep], x[keep]))
    half = fov_deg / 2.0
    sector = np.floor((az + half) / fov_deg * rays).astype(np.int64)
    inside = (sector >= 0) & (sector < rays)
    scan = np.full(rays, np.inf)
    np.minimum.at(scan, sector[inside], rng[keep][inside])
    return np.clip(np.where(np.isfinite(scan), scan, max_range_m), 0.0, max_range_m).astype(np.float32)


def range_angle_map(cube: np.ndarray, range_bins: int, angle_bins: int) -> np.ndarray:
    """An FMCW radar frame (rx antennas, ADC samples per chirp, chirps) -> (1, range_bins, angle_bins) float32 dB.

    As in the DeepSense radar scripts (Demirhan & Alkhateeb, WCNC 2022): a range FFT over
    the ADC samples, static-clutter removal (the mean over chirps is subtracted; skipped
    for a single chirp), a zero-padded ``angle_bins``-point angle FFT over the antennas
    (fft-shifted: from -90 deg to +90 deg in sine space), and the magnitude summed over
    chirps. The range axis (all ADC-sample bins) is then averaged in ``range_bins``
    equal blocks and the map is given as ``20 log10`` of the magnitude.
    """
    x = np.asarray(cube)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"expected a radar cube (rx, samples, chirps), got shape {np.shape(cube)}")
    if x.shape[1] < range_bins:
        raise ValueError(f"radar frame has {x.shape[1]} samples per chirp, fewer than range_bins={range_bins}")
    spec = np.fft.fft(x.astype(np.complex128), axis=1)
    if spec.shape[2] > 1:
        spec = spec - spec.mean(axis=2, keepdims=True)
    spec = np.fft.fftshift(np.fft.fft(spec, n=angle_bins, axis=0), axes=0)
    mag = np.abs(spec).sum(axis=2).T  # (samples, angle_bins)
    pooled = _resize_axis(mag, range_bins, 0)
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(pooled)
    return np.maximum(db, RADAR_DB_FLOOR)[None].astype(np.float32)

