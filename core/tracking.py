"""Hand tracks: every detected hand keeps an identity across frames, and its side.

MediaPipe labels each hand "left" or "right" frame by frame, and it is often wrong in runs of
frames (both hands "right" at once, or a lone hand flipping). The engine therefore does not key
its per-hand state on that label. :class:`HandTracker` associates each frame's detections with
the tracks of the previous frames by where the hand is, how large it is and which way it is
built (Hungarian assignment on a gated cost), so two hands with the same label are two tracks,
and decides every track's side from evidence accumulated along the track:

* **geometry** (:func:`chirality`): a right hand is the mirror image of a left one, so the sign
  of a triple product of MediaPipe's metric world landmarks tells them apart; it is
  weak only for a hand held flat (the fingers' flexion shows the palm side);
* **the fit** (:meth:`HandTracker.observe_fit_sides`): where the side is unsure, the engine fits
  both the right and the mirrored model; the one with the lower residual is evidence;
* **MediaPipe's label**, weighted low.

The evidence is a log-odds sum with a slow decay, and the side changes only when it crosses a
margin the other way (hysteresis), never on one frame's label. Tracks are born from unmatched
detections, coast a few frames through a missed detection (positions predicted at constant
velocity) and then die.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.detect import Detection

__all__ = ["HandTracker", "Track", "TrackerSettings", "TrackedHand", "chirality", "side_evidence"]

# MediaPipe keypoint indices: wrist, the finger bases (MCP) and the distal joints.
_WRIST, _INDEX_MCP, _MIDDLE_MCP, _PINKY_MCP = 0, 5, 9, 17
_PALM = (0, 5, 9, 13, 17)
_DISTAL = (2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19, 20)


def chirality(points_3d: np.ndarray) -> float:
    """Signed handedness of 21 keypoints in 3D: > 0 for a right hand, < 0 for a left one.

    The palm normal ``(index MCP - wrist) x (pinky MCP - wrist)`` of a right hand points to the
    side the fingers flex toward and the thumb opposes; for a left hand (its mirror image) it
    points away. The value is the mean offset of the thumb and finger joints along that normal,
    in units of the palm's length (wrist to middle MCP). On the open hand's natural poses it is
    0.28 (median; 5th percentile 0.12) for right hands and the negative for left ones; it
    approaches 0 for a hand held flat or bent backwards.

    Args:
        points_3d: (21, 3) keypoints in any right-handed metric frame (MediaPipe world
            landmarks, or camera-frame joints: x right, y down, z forward), MediaPipe order.
    """
    p = np.asarray(points_3d, dtype=np.float64)
    normal = np.cross(p[_INDEX_MCP] - p[_WRIST], p[_PINKY_MCP] - p[_WRIST])
    norm = float(np.linalg.norm(normal))
    palm = float(np.linalg.norm(p[_MIDDLE_MCP] - p[_WRIST]))
    if norm < 1e-12 or palm < 1e-12:
        return 0.0
    offsets = (p[list(_DISTAL)] - p[list(_PALM)].mean(0)) @ (normal / norm)
    return float(offsets.mean() / palm)


@dataclass(frozen=True)
class TrackerSettings:
    """How tracks are associated, kept and sided.

    Attributes:
        gate: largest association cost accepted (mean keypoint distance to the track's
            predicted keypoints, in hand sizes, plus the size and side terms).
        size_weight: cost per unit of |log(size ratio)|.
        side_weight: cost of a detection whose geometry clearly contradicts a confident
            track's side (keeps crossing hands apart).
        duplicate: two detections whose keypoints are on average closer than this many hand
            sizes are one hand reported twice.
        fragment: a detection under this fraction of another's size (keypoint box diagonals)
            whose keypoints' centre lies inside that one's keypoint box is a piece of that hand
            (MediaPipe now and then reports a fingertip of a hand as another, tiny hand: frame
            74 of the demo clip, a "left hand" 22 px across on a 220 px right hand).
        max_coast_frames: frames a track survives without a detection.
        max_coast_s: seconds a track survives without a detection (whichever comes first).
        chirality_scale: chirality giving one unit of log-odds (see :func:`chirality`).
        chirality_cap: largest log-odds one frame's geometry gives.
        label_weight: factor on the log-odds of MediaPipe's label score, log(s / (1 - s)) with s
            in [0.01, 0.99] (tempered: its scores are overconfident). A confident label (0.9:
            1.1) is followed within a few frames where the geometry is weak; a doubtful one
            (0.6: 0.2) hardly counts. On the rendered 90 degree clip (labels right at 0.85-0.93,
            world landmarks nearly flat, the mirrored model fitting 1.2-1.5x better) the track
            was left at frames 6-9 with the linear 0.7 * (2s - 1) (0.56 at 0.9).
        label_cap: most log-odds the labels may hold together.
        fit_scale: fit residual ratio (log) giving one unit of log-odds.
        fit_cap: largest log-odds of one frame's fit comparison.
        fit_trusted: the fit comparison counts in full while the better fit's mean residual is
            at most this fraction of the hand's size (keypoint box diagonal); beyond it, less
            and less, down to nothing at ``fit_useless``. Two fits that both leave much of the
            keypoints unexplained are two local minima, and which is lower says little about the
            side: on a real EgoHands frame (unipd_handseg30 15, a left hand half hidden behind the
            camera wearer's arm, world landmarks reading weakly right) the right model stuck at
            13% of the hand's size and the left one at 29%, and that comparison (3 log-odds)
            overturned the label and geometry, which said left. Good fits are far below: on the
            rendered 90 and 120 degree clips the better fit's residual is 0.8-5.4% of the size,
            on the real photos median 1.5%.
        fit_useless: see ``fit_trusted``.
        decay: factor on the accumulated log-odds per frame (forgets old evidence slowly).
        geo_cap: most log-odds geometry and fits may hold together for a young track, so that a
            wrong early side (MediaPipe reading a hand as its mirror image for its first frames,
            in every channel) is undone within two frames of clear evidence the other way.
        geo_cap_growth: the bound grows by this much per frame with a detection, up to
            ``geo_cap_max``: a side held for long is not given up on a few frames (the
            pre-forearm 120 degree render's right hand reads left in label, landmarks and fit
            for its last 5 frames).
        geo_cap_max: the bound's largest value.
        switch_margin: log-odds beyond zero, the other way, before a track's side changes.
        unsure: a track is unsure of its side while the |log-odds| from its geometry and fits
            (not labels) is below this: the engine then fits both models.
        recheck: a frame whose geometry gives at least this many log-odds against the track's
            side makes it unsure for that frame: both models are fitted again, and the fit
            (independent of MediaPipe's world landmarks) confirms or overturns the side.
    """

    gate: float = 1.2
    size_weight: float = 0.5
    side_weight: float = 0.4
    duplicate: float = 0.15
    fragment: float = 0.25
    max_coast_frames: int = 5
    max_coast_s: float = 0.5
    chirality_scale: float = 0.08
    chirality_cap: float = 3.0
    label_weight: float = 0.5
    label_cap: float = 5.0
    fit_scale: float = 0.15
    fit_cap: float = 3.0
    fit_trusted: float = 0.06
    fit_useless: float = 0.12
    decay: float = 0.97
    geo_cap: float = 8.0
    geo_cap_growth: float = 1.0
    geo_cap_max: float = 50.0
    switch_margin: float = 4.0
    unsure: float = 6.0
    recheck: float = 2.0


def side_evidence(detection: Detection, settings: TrackerSettings = TrackerSettings()) -> tuple[float, float]:
    """One frame's log-odds that ``detection`` is a right hand: ``(from its geometry, from its
    label)``."""
    geo = chirality(detection.world_landmarks) / settings.chirality_scale
    geo = float(np.clip(geo, -settings.chirality_cap, settings.chirality_cap))
    score = min(max(float(detection.score), 0.01), 0.99)
    label = settings.label_weight * math.log(score / (1.0 - score))
    return geo, (label if detection.handedness == "right" else -label)


def _is_fragment(small: np.ndarray, big: np.ndarray, fraction: float) -> bool:
    """Whether the hand ``small`` (21 x 2 px) is under ``fraction`` of ``big``'s size with its
    keypoints' centre inside ``big``'s keypoint box: a piece of that hand, not a hand."""
    if _hand_size(small) >= fraction * _hand_size(big):
        return False
    b = np.asarray(big, dtype=np.float64)
    centre = np.asarray(small, dtype=np.float64).mean(0)
    return bool(np.all(centre >= b.min(0)) and np.all(centre <= b.max(0)))


def _hand_size(keypoints_2d: np.ndarray) -> float:
    """Diagonal of the keypoints' box, pixels (at least 1)."""
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    return max(float(np.linalg.norm(kp.max(0) - kp.min(0))), 1.0)


@dataclass
class Track:
    """One hand's identity (mutable state of :class:`HandTracker`).

    Attributes:
        track_id: the identity, unique within a stream.
        keypoints_2d: (21, 2) pixels at the last detection. velocity: (21, 2) pixels per frame.
        last_frame: the tracker's frame count at the last detection. last_time_s: its time.
        side: "right" or "left".
        geo_odds: accumulated log-odds that it is a right hand from geometry and fits: while it
            is weak (a hand held flat), the track is unsure and the engine keeps fitting both
            models. label_odds: the same from MediaPipe's labels, bounded by ``label_cap`` (a
            run of wrong labels never outweighs clear geometry).
        hits: frames with a detection.
        committed: the evidence once reached the switch margin; from then on the side changes
            only beyond the margin the other way (hysteresis); before, it follows the sign.
    """

    track_id: int
    keypoints_2d: np.ndarray
    velocity: np.ndarray
    last_frame: int
    last_time_s: float
    side: str
    geo_odds: float = 0.0
    label_odds: float = 0.0
    hits: int = 1
    committed: bool = False

    @property
    def log_odds(self) -> float:
        """All the evidence that the track is a right hand."""
        return self.geo_odds + self.label_odds

    def predicted(self, frame: int) -> np.ndarray:
        """(21, 2) keypoints expected at ``frame`` (constant velocity, at most 3 frames on)."""
        return self.keypoints_2d + self.velocity * min(frame - self.last_frame, 3)

    def add_evidence(self, log_odds: float, settings: TrackerSettings, geometric: bool = True) -> None:
        """Accumulate evidence (``geometric``: from geometry or fits, else a label); the side
        changes only beyond the switch margin (hysteresis)."""
        if geometric:
            cap = min(max(settings.geo_cap, settings.geo_cap_growth * self.hits), settings.geo_cap_max)
            self.geo_odds = float(np.clip(self.geo_odds + log_odds, -cap, cap))
        else:
            self.label_odds = float(np.clip(self.label_odds + log_odds, -settings.label_cap, settings.label_cap))
        if not self.committed:  # young and unsure: the side follows the evidence so far
            self.side = "right" if self.log_odds >= 0 else "left"
            self.committed = abs(self.log_odds) >= settings.switch_margin
        elif self.side == "right" and self.log_odds < -settings.switch_margin:
            self.side = "left"
        elif self.side == "left" and self.log_odds > settings.switch_margin:
            self.side = "right"


@dataclass(frozen=True)
class TrackedHand:
    """A detection with its track.

    Attributes:
        track_id: the hand's identity. side: the track's side ("right" or "left").
        side_confidence: P(side) from the track's evidence, in [0.5, 1].
        unsure: the track's evidence is still weak (fit both models to add some).
        detection: the detection, its ``handedness`` set to the track's side and its
            ``score`` to ``side_confidence``. label: MediaPipe's own label.
        index: the detection's position in the frame's detections.
    """

    track_id: int
    side: str
    side_confidence: float
    unsure: bool
    detection: Detection
    label: str
    index: int


class HandTracker:
    """Associates detections with hand tracks frame by frame (thin state: the live tracks)."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()) -> None:
        self.settings = settings
        self.tracks: dict[int, Track] = {}
        self._next_id = 0
        self._frame = -1

    def reset(self) -> None:
        """Forget every track (a new stream starts); identities start again at 0."""
        self.tracks.clear()
        self._next_id = 0
        self._frame = -1

    def _cost(self, track: Track, det: Detection, evidence: float) -> float:
        st = self.settings
        pred = track.predicted(self._frame)
        size = _hand_size(pred)
        dist = float(np.linalg.norm(det.keypoints_2d - pred, axis=1).mean()) / size
        cost = dist + st.size_weight * abs(math.log(_hand_size(det.keypoints_2d) / size))
        if abs(track.geo_odds) >= st.unsure and abs(evidence) >= 1.0 and (evidence > 0) != (track.side == "right"):
            cost += st.side_weight
        return cost

    def update(self, detections: Sequence[Detection], timestamp_s: float) -> tuple[TrackedHand, ...]:
        """Assign this frame's detections to tracks, one :class:`TrackedHand` per hand, in the
        detections' order, after aging out the tracks unseen too long.

        No hand is dropped: only a duplicate detection of one hand (MediaPipe now and then
        reports a hand twice, keypoints within ``duplicate`` hand sizes) is merged into the
        detection that fits a track better, and a fragment of one (``fragment``) is left out.
        """
        st = self.settings
        self._frame += 1
        live = [t for t in self.tracks.values()
                if self._frame - t.last_frame <= st.max_coast_frames + 1
                and timestamp_s - t.last_time_s <= st.max_coast_s]
        self.tracks = {t.track_id: t for t in live}
        index = self._distinct(detections, live)
        detections = [detections[k] for k in index]
        evidence = [side_evidence(d, st) for d in detections]
        geometry = [g for g, _ in evidence]
        assigned: dict[int, Track] = {}
        if live and detections:
            cost = np.array([[self._cost(t, d, g) for d, g in zip(detections, geometry)] for t in live])
            rows, cols = linear_sum_assignment(np.where(cost <= st.gate, cost, 1e6))
            for r, c in zip(rows, cols):
                if cost[r, c] <= st.gate:
                    assigned[int(c)] = live[r]
        out = []
        for i, (d, (geo, label)) in enumerate(zip(detections, evidence)):
            track = assigned.get(i)
            if track is None:
                track = Track(self._next_id, np.asarray(d.keypoints_2d, np.float64), np.zeros((21, 2)), self._frame,
                              timestamp_s, "right" if geo + label >= 0 else "left", hits=0)
                self._next_id += 1
                self.tracks[track.track_id] = track
            else:
                gap = max(self._frame - track.last_frame, 1)
                step = (np.asarray(d.keypoints_2d, np.float64) - track.keypoints_2d) / gap
                track.velocity = 0.5 * track.velocity + 0.5 * step
                track.keypoints_2d = np.asarray(d.keypoints_2d, np.float64)
                track.last_frame, track.last_time_s = self._frame, timestamp_s
                track.geo_odds *= st.decay
                track.label_odds *= st.decay
            track.hits += 1
            track.add_evidence(geo, st)
            track.add_evidence(label, st, geometric=False)
            out.append(self._tracked(track, d, index[i], geo))
        return tuple(out)

    def _distinct(self, detections: Sequence[Detection], live: list[Track]) -> list[int]:
        """Indices of the detections less duplicates of one hand (keeping the one nearer a
        live track, else the first) and fragments of another detection, in order."""
        def nearest(k: int) -> float:
            return min((self._cost(t, detections[k], 0.0) for t in live), default=0.0)

        keep = [k for k, d in enumerate(detections)
                if not any(_is_fragment(d.keypoints_2d, o.keypoints_2d, self.settings.fragment)
                           for o in detections if o is not d)]
        i = 0
        while i < len(keep):
            j = i + 1
            while j < len(keep):
                a, b = detections[keep[i]], detections[keep[j]]
                gap = float(np.linalg.norm(a.keypoints_2d - b.keypoints_2d, axis=1).mean())
                if gap < self.settings.duplicate * min(_hand_size(a.keypoints_2d), _hand_size(b.keypoints_2d)):
                    if nearest(keep[j]) < nearest(keep[i]):
                        keep[i] = keep[j]
                    del keep[j]
                else:
                    j += 1
            i += 1
        return sorted(keep)

    def observe_fit_sides(self, track_id: int, error_right_px: float, error_left_px: float) -> None:
        """Evidence from fitting both models to the track's detection of this frame: the lower
        residual's side, weighted down to nothing as the better residual grows from
        ``fit_trusted`` to ``fit_useless`` of the hand's size (neither model then explains the
        keypoints, and the comparison is between two failed fits)."""
        track = self.tracks.get(track_id)
        if track is None or not (error_right_px > 0 and error_left_px > 0):
            return
        st = self.settings
        e = float(np.clip(math.log(error_left_px / error_right_px) / st.fit_scale, -st.fit_cap, st.fit_cap))
        relative = min(error_right_px, error_left_px) / _hand_size(track.keypoints_2d)
        span = max(st.fit_useless - st.fit_trusted, 1e-9)
        trust = float(np.clip((st.fit_useless - relative) / span, 0.0, 1.0))
        if trust > 0.0:
            track.add_evidence(trust * e, st)

    def side_of(self, track_id: int) -> str | None:
        """The track's current side, or None for a track that is gone."""
        track = self.tracks.get(track_id)
        return None if track is None else track.side

    def _tracked(self, track: Track, d: Detection, index: int, geometry: float = 0.0) -> TrackedHand:
        st = self.settings
        contradicted = (geometry > 0) != (track.side == "right") and abs(geometry) >= st.recheck
        p_right = 1.0 / (1.0 + math.exp(-track.log_odds))
        conf = p_right if track.side == "right" else 1.0 - p_right
        conf = max(conf, 0.5)
        det = dataclasses.replace(d, handedness=track.side, score=conf)
        return TrackedHand(track.track_id, track.side, conf, abs(track.geo_odds) < st.unsure or contradicted, det,
                           d.handedness, index)
