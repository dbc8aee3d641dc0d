"""Find the well and the drop in a frame, on a small copy, with a recorded fallback.

Method (all on a copy whose long side is ``WORK_SIDE`` pixels):

1. **Well**: the bright region that holds the frame's centre, after an Otsu threshold of the
   blurred grey, with its holes filled and replaced by its convex hull (wells are convex; a dark
   drop edge touching the wall must not bite into it). Its shape is read from how well it fills
   its minimum-area rectangle (square/rectangular) or enclosing circle (round). A well the frame
   edge cuts may miss the centre: then the largest solid bright region on the frame border is
   the well, and its shape is fitted to its outline inside the frame. No such region, or one
   filling nearly the whole frame, means the well is the frame.
2. **Drop**: edges inside the (slightly shrunk) well, from the largest per-channel gradient, so a
   colour-only boundary counts and a smooth polariser gradient does not. The non-edge regions
   split the well into pieces; the piece touching the well wall the most is the empty well
   floor. What remains (edges and enclosed pieces) is the drop; its largest blob, plus blobs
   of comparable size, gives the box. A drop that touches the wall still works, because it
   is the floor, not the drop, that must be enclosed. Pieces hugging the wall (shadows) are
   left out; thin pieces of the drop's rim nearby are taken in and kept (a faint rim the
   floor leaked past still outlines the drop); on an even floor, the region of the drop's
   own shade is added (a pale drop with no rim to speak of).
3. **Fallback**: drop → well → centre, recorded in ``method`` with the reason in ``note``
   (and the ``no_drop_found`` flag, in ``quality``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from xtalwatch.preprocess.resize import shrink

__all__ = ["Box", "Location", "WORK_SIDE", "centre_box", "locate", "grey", "locate_small", "working_copy"]

WORK_SIDE = 256  # px; long side of the working copy. Drops are tens of px at this scale.

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels
WellShape = Literal["round", "square", "rectangular", "irregular", "frame"]
Method = Literal["drop", "well", "centre"]

# Drop plausibility, as fractions of the well area.
_MIN_DROP_FRACTION = 0.01
_MAX_DROP_FRACTION = 0.97
_CLOSE = 9  # px at working scale
_EDGE_K, _EDGE_P99, _EDGE_MIN = 3.0, 0.1, 6.0
# Gaps in a drop outline up to about twice this radius are bridged when finding the floor.
_GAP_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
_SAME_FLOOR = 8.0  # grey levels; a floor piece's mean colour is this close to the floor's
_RIM_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
# px around the well's box searched for the drop: more than the longest reach of a filter chain
# past the well (Gaussian + Sobel 5 px, closing 8, gap dilation 3, wall reach 2 % + 1 of the side;
# the shade blur reaches 8 px).
_ROI_PAD = 16
# Pieces of a drop's own rim (px at working scale): at least this big, at most this far from the drop,
# taken in over this many rounds (each round reaches one arc further along a broken rim).
_RIM_PIECE, _RIM_REACH, _RIM_STEPS = 30, 4, 3
# A piece differing from the floor's shade by this many times the floor's own spread, and by at least
# this many grey levels, is drop (on a 2.5 px blur).
_SHADE_K, _SHADE_MIN = 4.0, 8.0
_EVEN_FLOOR = 5.0  # grey levels: the most a floor's median distance from its shade along the wall may be
_HUG_FRACTION = 0.8  # of a piece's pixels in the band along the wall: a wall shadow, not drop
# A well cut by the frame edge is taken only if its floor fills this much of its hull (a solid region,
# not a ring of plate around something): the floor less a drop of up to about half the well.
_CUT_SOLIDITY = 0.5


@dataclass(frozen=True)
class Location:
    """Where the well and the drop are, in frame pixels."""

    well_box: Box
    well_shape: WellShape
    drop_box: Box
    method: Method
    note: str = ""


def working_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame shrunk so its long side is ``WORK_SIDE`` px, and the scale factor used (<= 1)."""
    h, w = image.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1.0:
        small = shrink(image, (max(1, round(w * scale)), max(1, round(h * scale))), last="linear")
    else:
        small = image
    return small, scale


def grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _well_shape(contour: np.ndarray) -> WellShape:
    area = cv2.contourArea(contour)
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    (_, _), radius = cv2.minEnclosingCircle(contour)
    rect_fill = area / max(rw * rh, 1.0)
    circle_fill = area / max(np.pi * radius * radius, 1.0)
    if rect_fill >= 0.9 and rect_fill > circle_fill:
        aspect = max(rw, rh) / max(min(rw, rh), 1.0)
        return "square" if aspect < 1.15 else "rectangular"
    if circle_fill >= 0.7:
        return "round"
    return "irregular"


def _cut_well_shape(mask: np.ndarray) -> WellShape:
    """Shape of a well the frame edge cuts: a circle fitted to its outline inside the frame only.

    The straight cut along the frame border is left out (it is the frame's, not the well's);
    the rest fits a circle (Kasa's algebraic least squares) to within 3 % of its radius when the
    well is round. Otherwise the cut outline is named like a whole one.
    """
    h, w = mask.shape
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate(contours).reshape(-1, 2).astype(np.float64)
    x, y = points[:, 0], points[:, 1]
    inner = (x > 1) & (y > 1) & (x < w - 2) & (y < h - 2)
    # Mostly frame border (a bright field filling the frame) is no cut circle, whatever fits.
    if inner.sum() >= max(20, 0.5 * inner.size):
        x, y = x[inner], y[inner]
        # x² + y² = a x + b y + c, so the centre is (a/2, b/2) and r² = c + (a² + b²)/4.
        a, b, c = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], 1), x * x + y * y, rcond=None)[0]
        cx, cy = a / 2, b / 2
        radius = np.sqrt(max(c + cx * cx + cy * cy, 0.0))
        if radius > 0 and np.sqrt(np.mean((np.hypot(x - cx, y - cy) - radius) ** 2)) < 0.03 * radius:
            return "round"
    return _well_shape(cv2.convexHull(points.astype(np.int32)))


def _gradient(image: np.ndarray, sigma: float) -> np.ndarray:
    """Largest per-channel Sobel magnitude (float32): a colour-only boundary counts, a smooth gradient does not."""
    blur = cv2.GaussianBlur(image, (0, 0), sigma)
    magnitude = None
    for c in [blur] if blur.ndim == 2 else cv2.split(blur):
        m = cv2.magnitude(cv2.Sobel(c, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(c, cv2.CV_32F, 0, 1, ksize=3))
        magnitude = m if magnitude is None else cv2.max(magnitude, m)
    return magnitude


def _median_p99(values: np.ndarray) -> tuple[float, float]:
    # Every 3rd sample is plenty for two order statistics and cuts their cost by 3.
    sample = values[::3] if values.size > 3000 else values
    # np.percentile's linear interpolation, from one partition around the four ranks it reads
    # (np.percentile itself costs twice as much in argument handling at this size).
    ranks = (sample.size - 1) * np.array([0.5, 0.99])
    low = np.floor(ranks).astype(np.intp)
    high = np.minimum(low + 1, sample.size - 1)
    ordered = np.partition(sample, np.unique(np.concatenate([low, high])))
    a, b = ordered[low].astype(np.float64), ordered[high].astype(np.float64)
    median, p99 = a + (ranks - low) * (b - a)
    return float(median), float(p99)


def _component_hull(labels: np.ndarray, label: int) -> np.ndarray:
    """Convex hull of one labelled component, in working-copy pixels.

    Taken from its outer contours rather than from all its pixels: the same hull (its corners
    are boundary pixels) from a few hundred points instead of tens of thousands.
    """
    contours, _ = cv2.findContours((labels == label).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.convexHull(np.concatenate(contours))


def _components(mask: np.ndarray, connectivity: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Label count, labels (int32) and pixel count per label (label 0 is the background).

    ``connectedComponentsWithStats`` spends 0.3 ms of its 0.4 ms on stats we do not read; the
    labels are the same without them and the areas are one ``bincount``.
    """
    count, labels = cv2.connectedComponents(mask, connectivity=connectivity)
    return count, labels, np.bincount(labels.ravel(), minlength=count)


def _select(labels: np.ndarray, count: int, chosen: object) -> np.ndarray:
    """uint8 0/255 mask of the pixels whose label is in ``chosen``: one table lookup, not ``np.isin``."""
    table = np.zeros(count, np.uint8)
    table[chosen] = 255
    return table[labels]


def _find_well(grey: np.ndarray) -> tuple[np.ndarray, WellShape]:
    """Return the well mask (uint8 0/255, working scale) and its shape."""
    h, w = grey.shape
    whole = np.full((h, w), 255, np.uint8)
    blur = cv2.GaussianBlur(grey, (0, 0), 2.0)
    otsu, _ = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Below Otsu, towards the dark class: a drop darker than the well floor stays inside the well,
    # while the black wall ring around it stays out.
    # (The dark class's mean from the histogram: the same number as a masked mean, a fifth of the cost.)
    counts = cv2.calcHist([blur], [0], None, [256], [0, 256]).ravel()[: int(otsu) + 1]
    dark_mean = float(counts @ np.arange(counts.size)) / counts.sum() if counts.any() else 0.0
    # uint8 vs float threshold: OpenCV compares with floor(thr), which for integer pixels is ``> thr``.
    _, bright = cv2.threshold(blur, 0.5 * (otsu + dark_mean), 255, cv2.THRESH_BINARY)
    # Strong edges are barriers too: a thin dark wall outline, blurred at this scale, no longer
    # lets the well floor leak into the light plastic of the plate around it.
    magnitude = _gradient(grey, 1.5)
    median, p99 = _median_p99(magnitude.ravel())
    barrier = cv2.compare(magnitude, max(3.0 * median, 0.25 * p99), cv2.CMP_GT)
    floor = cv2.bitwise_and(bright, cv2.bitwise_not(barrier))
    count, labels, areas = _components(floor, 4)
    best_hull, best_area = None, 0.0
    cut_hull, cut_area = None, 0.0
    centre = (w / 2.0, h / 2.0)
    on_border = np.zeros(count, bool)
    on_border[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    for label in 1 + np.flatnonzero(areas[1:] >= 0.02 * h * w):
        hull = _component_hull(labels, label)
        area = cv2.contourArea(hull)
        if not 0.12 * h * w <= area <= 0.9 * h * w:
            continue
        # The well is the largest convex region around the frame centre that is not the whole frame;
        # a drop interior is enclosed by the floor's hull, so the floor wins.
        if area > best_area and cv2.pointPolygonTest(hull, centre, False) >= 0:
            best_hull, best_area = hull, area
        # A well cut by the frame edge may miss the centre: keep the largest solid region on the border.
        elif on_border[label] and area > cut_area and areas[label] >= _CUT_SOLIDITY * area:
            cut_hull, cut_area = hull, area
    if best_hull is None:
        best_hull = cut_hull
    if best_hull is None:
        return whole, "frame"
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, best_hull, 255)
    # A drop at the wall, ringed by its own rim, is a separate bright piece next to the floor:
    # take in pieces that touch the floor's hull but not the frame's border (the plate does).
    # Per label, in bulk: pixels next to the hull, and pixels inside it.
    take = ~on_border & (areas >= 0.005 * h * w)
    take[0] = False
    if take.any():  # usually not: skip the two per-label counts
        near = cv2.dilate(mask, np.ones((5, 5), np.uint8))
        touching = np.bincount(labels[near > 0], minlength=count)
        inside = np.bincount(labels[mask > 0], minlength=count)
        take &= (touching > 0) & (inside < areas)
    points = [best_hull.reshape(-1, 2)]
    points += [_component_hull(labels, label).reshape(-1, 2) for label in np.flatnonzero(take)]
    if len(points) > 1:
        hull = cv2.convexHull(np.concatenate(points))
        if cv2.contourArea(hull) <= 0.9 * h * w:
            best_hull = hull
            cv2.fillConvexPoly(mask, best_hull, 255)
    cut = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    return mask, _cut_well_shape(mask) if cut else _well_shape(best_hull)


def _edges(small: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Edge mask inside the well, thresholded relative to the well's own gradient statistics."""
    magnitude = _gradient(small, 1.2)
    values = magnitude[inside > 0]
    if values.size == 0:
        return np.zeros(inside.shape, np.uint8)
    median, p99 = _median_p99(values)
    threshold = max(_EDGE_K * median, _EDGE_P99 * p99, _EDGE_MIN)
    edges = ((magnitude > threshold) & (inside > 0)).astype(np.uint8) * 255
    # Closing bridges small gaps in a faint drop outline, so the floor does not leak into the drop.
    return cv2.morphologyEx(edges, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_CLOSE, _CLOSE)))


def _find_drop(small: np.ndarray, well: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Return the drop mask at working scale, or None and why not.

    The search runs on the well's bounding box grown by ``_ROI_PAD``, not the whole copy
    (20-40 % fewer pixels for every filter): the same result, because everything it looks at
    lies inside the well and no filter chain reaches further than the pad.
    """
    h, w = well.shape
    shrink = max(3, round(0.02 * max(h, w)))
    x, y, bw, bh = cv2.boundingRect(well)
    x0, y0 = max(0, x - _ROI_PAD), max(0, y - _ROI_PAD)
    x1, y1 = min(w, x + bw + _ROI_PAD), min(h, y + bh + _ROI_PAD)
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return _find_drop_in(small, well, shrink)
    drop, why = _find_drop_in(small[y0:y1, x0:x1], well[y0:y1, x0:x1], shrink)
    if drop is None:
        return None, why
    full = np.zeros_like(well)
    full[y0:y1, x0:x1] = drop
    return full, why


def _find_drop_in(small: np.ndarray, well: np.ndarray, shrink: int) -> tuple[np.ndarray | None, str]:
    """``_find_drop`` on a region holding the whole well; ``shrink`` (px) comes from the full copy's size."""
    inside = cv2.erode(well, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * shrink + 1, 2 * shrink + 1)))
    if well.all():  # the frame is the well: its border is the wall
        inside = np.zeros_like(well)
        inside[shrink:-shrink, shrink:-shrink] = 255
    inside_area = cv2.countNonZero(inside)
    if inside_area < 100:
        return None, "well too small to search"
    thin = _edges(small, inside)
    edges = cv2.dilate(thin, _GAP_KERNEL)
    floor_candidates = cv2.bitwise_and(inside, cv2.bitwise_not(edges))
    count, labels = cv2.connectedComponents(floor_candidates, connectivity=4)
    if count <= 1:
        return None, "no edge-free floor inside the well"
    wall = cv2.subtract(inside, cv2.erode(inside, np.ones((5, 5), np.uint8)))
    contact = np.bincount(labels[wall > 0].ravel(), minlength=count)
    contact[0] = 0
    floor = int(contact.argmax())
    if contact[floor] == 0:
        return None, "no floor touches the well wall"
    # The floor was found with thick (dilated) edges, so it cannot leak into the drop through a small
    # gap in a faint outline; grow it back by the same amount, staying on the thin-edge floor.
    # Pieces of floor cut off by crystals or edges still touch the wall over a good length and
    # look like the floor; a drop touching the wall differs in shade or hue.
    floor_labels = [floor]
    floor_colour = np.array(cv2.mean(small, mask=(labels == floor).astype(np.uint8))[:3])
    for label in np.flatnonzero(contact >= 0.25 * contact[floor]):
        if label != floor:
            colour = np.array(cv2.mean(small, mask=(labels == label).astype(np.uint8))[:3])
            if float(np.abs(colour - floor_colour).max()) < _SAME_FLOOR:
                floor_labels.append(int(label))
    floor_mask = _select(labels, count, floor_labels)
    floor_mask = cv2.bitwise_and(cv2.dilate(floor_mask, _GAP_KERNEL), cv2.bitwise_and(inside, cv2.bitwise_not(thin)))
    drop = cv2.bitwise_and(inside, cv2.bitwise_not(floor_mask))
    drop = cv2.morphologyEx(drop, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    count, labels, areas = _components(drop, 8)
    if count <= 1:
        return None, "nothing but floor inside the well"
    areas = areas[1:]
    # Shadows and reflections hugging the wall are not drop: a piece lying almost all in a band
    # along the search area's edge is left out (a drop at the wall reaches in from it).
    near_wall = _near_wall(inside, shrink)
    hugging = _hugging_wall(near_wall, labels, count)
    ranked = np.where(hugging, 0, areas) if not hugging.all() else areas
    biggest = float(ranked.max())
    keep = 1 + np.flatnonzero(ranked >= 0.2 * biggest)
    drop = _select(labels, count, keep)
    drop = _take_in_rim(drop, labels, count, areas)
    drop = cv2.bitwise_or(drop, _shaded_part(small, inside, floor_mask, drop, near_wall))
    area = cv2.countNonZero(drop)
    # Thresholded gradients reach past the true rim by about the blur width: take that back, but
    # from solid parts only. A faint drop's rim is often a thin arc the floor leaked past; eroding
    # it would lose the part of the drop it outlines.
    drop = cv2.bitwise_or(cv2.erode(drop, _RIM_KERNEL), cv2.subtract(drop, cv2.morphologyEx(drop, cv2.MORPH_OPEN, _RIM_KERNEL)))
    # A drop that reaches the shrunk search area's edge touches the wall: give it back the band
    # between the search area and the wall that was left out to avoid the wall's own edges.
    band = cv2.subtract(well, inside)
    reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * shrink + 3, 2 * shrink + 3))
    touching = cv2.bitwise_and(drop, cv2.subtract(inside, cv2.erode(inside, _RIM_KERNEL)))
    if cv2.countNonZero(touching):
        drop = cv2.bitwise_or(drop, cv2.bitwise_and(cv2.dilate(touching, reach), band))
    if area < _MIN_DROP_FRACTION * inside_area:
        return None, f"drop candidate too small ({area / inside_area:.1%} of the well)"
    if area > _MAX_DROP_FRACTION * inside_area:
        return None, "drop candidate fills the well"
    return drop, ""


def _near_wall(inside: np.ndarray, shrink: int) -> np.ndarray:
    """Boolean mask of the search area's pixels within ``2 * shrink`` px of its edge."""
    # Zero-padded so the frame's own border counts as a wall where the frame is the well.
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1] <= 2 * shrink


def _hugging_wall(near_wall: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Per label from 1: whether ``_HUG_FRACTION`` of its pixels are in ``near_wall``."""
    total = np.bincount(labels.ravel(), minlength=count)[1:]
    close = np.bincount(labels[near_wall & (labels > 0)], minlength=count)[1:]
    return close >= _HUG_FRACTION * np.maximum(total, 1)


def _hist_median(image: np.ndarray, mask: np.ndarray) -> int:
    """Median of a uint8 single-channel image under a uint8 mask, from its histogram (no sort)."""
    counts = cv2.calcHist([image], [0], mask, [256], [0, 256]).ravel().cumsum()
    return int(np.searchsorted(counts, counts[-1] / 2.0))


def _distance_from(blur: np.ndarray, shade: list[int]) -> np.ndarray:
    """uint8 image of the largest per-channel absolute difference from ``shade``."""
    planes = [blur] if blur.ndim == 2 else cv2.split(blur)
    distance = cv2.absdiff(planes[0], float(shade[0]))
    for plane, value in zip(planes[1:], shade[1:], strict=True):
        distance = cv2.max(distance, cv2.absdiff(plane, float(value)))
    return distance


def _wall_spread(blur: np.ndarray, wall: np.ndarray) -> tuple[list[int], np.ndarray, int]:
    """The floor's shade along the wall (median per channel), every pixel's distance from it, and
    the spread: the median distance along the wall."""
    planes = [blur] if blur.ndim == 2 else cv2.split(blur)
    shade = [_hist_median(plane, wall) for plane in planes]
    distance = _distance_from(blur, shade)
    return shade, distance, _hist_median(distance, wall)


def _shaded_part(small: np.ndarray, inside: np.ndarray, floor: np.ndarray, drop: np.ndarray,
                 near_wall: np.ndarray) -> np.ndarray:
    """The pieces of the well that differ in shade from its floor and overlap the drop found from edges.

    A pale drop with a faint, broken outline lets the floor leak into it, so the edges give only
    its textured part; on a floor as even as a Rigaku well's, the drop's own shade finds the rest.
    The floor's colour is read along the wall, where the floor is; a piece differs from it by more
    than ``_SHADE_K`` times the spread there (at least ``_SHADE_MIN`` levels in some channel).
    Only on an even floor: on a polariser's colour ramp or under vignetting nothing is added.
    """
    wall = cv2.subtract(inside, cv2.erode(inside, np.ones((9, 9), np.uint8)))
    # An uneven floor (vignetting, a polariser's ramp, a noisy sensor) is not one shade: parts of it
    # would pass for drop. Uneven along the wall, or in the middle unlike at the wall: nothing added.
    # First a cheap look (two 5 px box blurs, a fifth of the Gaussian's cost) with a 2x margin:
    # most colour frames stop here.
    if _wall_spread(cv2.blur(cv2.blur(small, (5, 5)), (5, 5)), wall)[2] > 2 * _EVEN_FLOOR:
        return np.zeros_like(inside)
    _, distance, spread = _wall_spread(cv2.GaussianBlur(small, (0, 0), 2.5), wall)
    if spread > _EVEN_FLOOR:
        return np.zeros_like(inside)
    threshold = max(_SHADE_K * spread, _SHADE_MIN)
    if _hist_median(distance, floor) > threshold:
        return np.zeros_like(inside)
    shaded = cv2.bitwise_and(cv2.compare(distance, threshold, cv2.CMP_GT), inside)
    shaded = cv2.morphologyEx(shaded, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    count, labels = cv2.connectedComponents(shaded, connectivity=8)
    if count <= 1:
        return shaded
    overlap = np.bincount(labels[drop > 0], minlength=count)[1:]
    chosen = (overlap > 0) & ~_hugging_wall(near_wall, labels, count)
    return _select(labels, count, 1 + np.flatnonzero(chosen))


def _take_in_rim(drop: np.ndarray, labels: np.ndarray, count: int, areas: np.ndarray) -> np.ndarray:
    """The drop grown by the pieces of its own rim next to it.

    A faint rim with a gap wider than the edge closing lets the floor leak into the drop: what
    is left as drop is only its darker or textured part, and the rest of the rim lies beside it
    as separate thin arcs, too small against the biggest blob to be kept. Arcs of at least
    ``_RIM_PIECE`` px within ``_RIM_REACH`` of the drop, and arcs next to those, are taken in.
    """
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _RIM_REACH + 1, 2 * _RIM_REACH + 1))
    candidate = areas >= _RIM_PIECE
    for _ in range(_RIM_STEPS):
        hit = np.bincount(labels[cv2.dilate(drop, near) > 0], minlength=count)[1:]
        grown = _select(labels, count, 1 + np.flatnonzero(candidate & (hit > 0)))
        grown = cv2.bitwise_or(grown, drop)
        if np.array_equal(grown, drop):
            break
        drop = grown
    return drop


def _to_frame(box: Box, scale: float, width: int, height: int) -> Box:
    x, y, w, h = box
    x0 = max(0, int(np.floor(x / scale)))
    y0 = max(0, int(np.floor(y / scale)))
    x1 = min(width, int(np.ceil((x + w) / scale)))
    y1 = min(height, int(np.ceil((y + h) / scale)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def centre_box(width: int, height: int) -> Box:
    """The last resort: the central half of the frame."""
    return width // 4, height // 4, max(1, width // 2), max(1, height // 2)


def locate(image: np.ndarray) -> Location:
    """Find the well and the drop in an 8-bit grey (H, W) or BGR (H, W, 3) frame."""
    height, width = image.shape[:2]
    try:
        small, scale = working_copy(image)
    except cv2.error as exc:
        return _centre_fallback(width, height, exc)
    return locate_small(small, scale, width, height)


def _centre_fallback(width: int, height: int, exc: Exception) -> Location:
    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return Location((0, 0, width, height), "frame", centre_box(width, height), "centre", f"opencv error: {detail}")


def locate_small(small: np.ndarray, scale: float, width: int, height: int) -> Location:
    """``locate`` on a working copy already made by ``working_copy`` (the pipeline reuses it).

    Never raises on odd pixels: an OpenCV error falls back to the centre with the error in ``note``.
    """
    try:
        well, shape = _find_well(grey(small))
        well_box = _to_frame(cv2.boundingRect(well), scale, width, height)
        drop, why = _find_drop(small, well)
    except cv2.error as exc:  # a frame OpenCV cannot handle must still get a crop
        return _centre_fallback(width, height, exc)
    if drop is not None:
        return Location(well_box, shape, _to_frame(cv2.boundingRect(drop), scale, width, height), "drop")
    if shape != "frame":
        return Location(well_box, shape, well_box, "well", why)
    return Location(well_box, shape, centre_box(width, height), "centre", why)
