"""Two-view augmentations for drop crops, as batched tensor operations on the training device.

The random draws (one small vector per sample) are made on the CPU from a seeded generator; the
pixel work runs wherever the images are, on the GPU when there is one, so that loading never
starves it. Crop, flips and 90° rotations are folded into one affine ``grid_sample``.

The recipe is SimCLR's (arXiv:2002.05709, appendix A) tuned for drops: the crop keeps at least
``crop_scale[0]`` of the drop so that crystals are in both views; flips and rotations because a
crystal has no "up"; strong colour jitter and greyscale so that the well's colour cannot be the
answer. Hue is rotated in YIQ space (a 3x3 matrix per sample), not through HSV as torchvision
does: the same idea, one batched matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["AugmentStrength", "ViewParams", "sample_view_params", "apply_view", "augment_pair", "to_float_nchw"]

_GREY = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class AugmentStrength:
    """How strong each augmentation is; see ``TrainConfig`` for the meaning of each field."""

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_rotate: bool = True
    color_jitter: float = 0.8
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma_max: float = 2.0  # pixels at 224 px, scaled with the output size
    noise_std: float = 0.0
    # Real-frame nuisances colour jitter cannot make (off unless asked; TrainConfig turns them on):
    gradient: float = 0.0  # polariser: each channel scaled by 1 + a*(ramp along a random direction), |a| <= this
    gradient_prob: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)  # faint drops, dim UV frames: y ** gamma, log-uniform in this range
    gamma_prob: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        for name in ("color_jitter_prob", "grayscale_prob", "blur_prob", "gradient_prob", "gamma_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, cfg) -> AugmentStrength:  # cfg: xtalwatch.config.TrainConfig
        return cls(crop_scale=(cfg.crop_scale_min, cfg.crop_scale_max), flip_rotate=cfg.flip_rotate,
                   color_jitter=cfg.color_jitter, color_jitter_prob=cfg.color_jitter_prob,
                   grayscale_prob=cfg.grayscale_prob, blur_prob=cfg.blur_prob,
                   blur_sigma_max=cfg.blur_sigma_max, noise_std=cfg.noise_std,
                   gradient=cfg.gradient, gradient_prob=cfg.gradient_prob,
                   gamma=(cfg.gamma_min, cfg.gamma_max), gamma_prob=cfg.gamma_prob)


@dataclass
class ViewParams:
    """The random draws for one view of B images; every field is a (B, ...) CPU tensor."""

    theta: torch.Tensor  # (B, 2, 3) affine map from output to input coordinates
    jitter: torch.Tensor  # (B,) bool
    brightness: torch.Tensor  # (B,) factors
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # (B,) fraction of a full turn
    grey: torch.Tensor  # (B,) bool
    blur_sigma: torch.Tensor  # (B,) in output pixels, 0 means no blur
    noise_std: torch.Tensor  # (B,) on the 0-1 scale
    noise_seed: int
    gradient: torch.Tensor  # (B, 3) per-channel slope of the colour ramp, 0 means none
    gradient_angle: torch.Tensor  # (B,) direction of the ramp, radians
    gamma: torch.Tensor  # (B,) exponent, 1 means none

    def slice(self, start: int, stop: int) -> ViewParams:
        """The draws for samples ``start:stop`` (one rank's share of a global batch)."""
        return ViewParams(**{f.name: (getattr(self, f.name) if f.name == "noise_seed"
                                      else getattr(self, f.name)[start:stop]) for f in fields(self)})


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def sample_view_params(batch: int, strength: AugmentStrength, out_size: int, generator: torch.Generator) -> ViewParams:
    """Draw the random parameters of one view for ``batch`` images."""
    g, s = generator, strength
    # Random resized crop: area fraction and aspect ratio, then a centre where the box fits.
    area = _uniform(batch, *s.crop_scale, g)
    log_ratio = _uniform(batch, math.log(s.crop_ratio[0]), math.log(s.crop_ratio[1]), g)
    half_w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    half_h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    cx = (2 * torch.rand(batch, generator=g) - 1) * (1 - half_w)
    cy = (2 * torch.rand(batch, generator=g) - 1) * (1 - half_h)
    if s.flip_rotate:
        quarter = torch.randint(0, 4, (batch,), generator=g).float() * (math.pi / 2)
        flip = torch.where(torch.rand(batch, generator=g) < 0.5, -1.0, 1.0)
    else:
        quarter, flip = torch.zeros(batch), torch.ones(batch)
    cos, sin = torch.cos(quarter).round(), torch.sin(quarter).round()  # exact 90° steps
    # theta = diag(half_w, half_h) @ rotation @ diag(flip, 1), plus the centre.
    theta = torch.stack([
        torch.stack([half_w * cos * flip, -half_w * sin, cx], dim=1),
        torch.stack([half_h * sin * flip, half_h * cos, cy], dim=1),
    ], dim=1)
    j = s.color_jitter
    bcs = 0.8 * j  # brightness, contrast and saturation spread (SimCLR's 0.8 * s)
    hue = min(0.2 * j, 0.5)
    sigma_max_px = s.blur_sigma_max * out_size / 224
    blur_on = torch.rand(batch, generator=g) < s.blur_prob
    blur = torch.where(blur_on, _uniform(batch, 0.1 * out_size / 224, sigma_max_px, g), torch.zeros(batch))
    return ViewParams(
        theta=theta,
        jitter=torch.rand(batch, generator=g) < s.color_jitter_prob,
        brightness=_uniform(batch, max(0.0, 1 - bcs), 1 + bcs, g),
        contrast=_uniform(batch, max(0.0, 1 - bcs), 1 + bcs, g),
        saturation=_uniform(batch, max(0.0, 1 - bcs), 1 + bcs, g),
        hue=_uniform(batch, -hue, hue, g),
        grey=torch.rand(batch, generator=g) < s.grayscale_prob,
        blur_sigma=blur,
        noise_std=_uniform(batch, 0.0, s.noise_std, g),
        noise_seed=int(torch.randint(0, 2**62, (1,), generator=g)),
        # Drawn last, so the draws above are those of a recipe without them.
        gradient=torch.where((torch.rand(batch, generator=g) < s.gradient_prob).view(-1, 1),
                             _uniform(3 * batch, -s.gradient, s.gradient, g).view(batch, 3), torch.zeros(batch, 3)),
        gradient_angle=_uniform(batch, 0.0, 2 * math.pi, g),
        gamma=torch.where(torch.rand(batch, generator=g) < s.gamma_prob,
                          torch.exp(_uniform(batch, math.log(s.gamma[0]), math.log(s.gamma[1]), g)), torch.ones(batch)),
    )


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _colour_jitter(x: torch.Tensor, p: ViewParams) -> torch.Tensor:
    # A fixed order (brightness, contrast, saturation, hue) instead of torchvision's random one.
    y = (x * _col(p.brightness, x)).clamp(0, 1)
    mean = _grey(y).mean(dim=(2, 3), keepdim=True)
    y = ((y - mean) * _col(p.contrast, x) + mean).clamp(0, 1)
    g = _grey(y)
    y = ((y - g) * _col(p.saturation, x) + g).clamp(0, 1)
    angle = p.hue.to(torch.float32) * 2 * math.pi
    c, s, o, z = torch.cos(angle), torch.sin(angle), torch.ones_like(angle), torch.zeros_like(angle)
    rot = torch.stack([torch.stack([o, z, z], 1), torch.stack([z, c, -s], 1), torch.stack([z, s, c], 1)], 1)
    m = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).to(device=x.device, dtype=x.dtype)  # (B, 3, 3)
    y = torch.einsum("bij,bjhw->bihw", m, y).clamp(0, 1)
    return torch.where(_col(p.jitter, x).bool(), y, x)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    if not bool((sigma > 0).any()):
        return x
    b, c, h, w = x.shape
    radius = max(1, min(int(math.ceil(3 * float(sigma.max()))), (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.clamp(min=1e-3).view(-1, 1)  # sigma 0 → a delta kernel, i.e. no blur
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype)
    k = k.repeat_interleave(c, dim=0)  # (B*C, 2r+1), one kernel per channel of each sample
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)  # separable: rows, then columns
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def _gradient_and_gamma(x: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """A polariser-like colour ramp across the frame, then a gamma curve; samples without them unchanged."""
    if bool((p.gradient != 0).any()):
        size = x.shape[-1]
        r = torch.linspace(-1, 1, size, device=x.device, dtype=x.dtype)
        a = p.gradient_angle.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)
        ramp = r.view(1, 1, -1) * torch.cos(a) + r.view(1, -1, 1) * torch.sin(a)  # (B, H, W)
        slope = p.gradient.to(device=x.device, dtype=x.dtype).view(-1, 3, 1, 1)
        x = (x * (1 + slope * ramp.unsqueeze(1))).clamp(0, 1)
    if bool((p.gamma != 1).any()):
        x = x.clamp(min=1e-6) ** _col(p.gamma, x)
    return x


def apply_view(x: torch.Tensor, p: ViewParams, out_size: int) -> torch.Tensor:
    """Augment a batch (B, 3, H, W) of floats in [0, 1] into one view (B, 3, out_size, out_size)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
    if p.theta.shape[0] != x.shape[0]:
        raise ValueError(f"{p.theta.shape[0]} parameter sets for a batch of {x.shape[0]}")
    theta = p.theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], 3, out_size, out_size], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = _gradient_and_gamma(y, p)
    y = _colour_jitter(y, p)
    y = torch.where(_col(p.grey, y).bool(), _grey(y).expand_as(y), y)
    y = _blur(y, p.blur_sigma)
    if float(p.noise_std.max()) > 0:
        g = torch.Generator(device=y.device).manual_seed(p.noise_seed)
        noise = torch.randn(y.shape, generator=g, device=y.device, dtype=y.dtype)
        y = (y + noise * _col(p.noise_std, y)).clamp(0, 1)
    return y


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float32 (B, 3, H, W) in [0, 1], on the same device."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255)


def augment_pair(images: torch.Tensor, strength: AugmentStrength, out_size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views of a uint8 (B, H, W, 3) batch, each (B, 3, out_size, out_size)."""
    x = to_float_nchw(images)
    p1 = sample_view_params(x.shape[0], strength, out_size, generator)
    p2 = sample_view_params(x.shape[0], strength, out_size, generator)
    return apply_view(x, p1, out_size), apply_view(x, p2, out_size)
