"""Small deterministic occupation coding model used by the ABS coding service emulator.

The model scores the 6-digit occupations of a bundled sample of real ANZSCO 2022 and
OSCA 2024 codes (``data/*.csv``) against the free-text job title (``occp_text``) and
duties (``tasks_text``) with IDF-weighted word overlap, then answers like the real
service: the best 6-digit occupation when it is clearly ahead, otherwise the deepest
group (4, 3, 2 or 1 digits) that holds most of the evidence, otherwise
``unsuccessful`` with up to three low-confidence suggestions.

Everything is precomputed into an inverted index at load time, so :meth:`CodingModel.code`
costs tens of microseconds, and results are memoised per model.
"""

from __future__ import annotations

import csv
import functools
import heapq
import io
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

__all__ = ["Code", "CodeOutcome", "CodingModel", "ModelInfo", "load_models"]

_CACHE_SIZE = 65_536
_TITLE_CACHE_SIZE = 16_384
_DATA_PACKAGE = "airflow_batchcode.emulator"
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_GENERAL_RE = re.compile(r"\(general\)", re.IGNORECASE)
_QUALIFIER_RE = re.compile(r"\(([^)]*)\)")

# Words that carry no occupational meaning (and words from official titles that only
# mark residual categories).
_STOPWORDS = frozenset(
    """
    a an and are as at be by for from i in is me my nec nfd no not of on or other our
    the their to was we with you your excluding etc also all any some do does did
    """.split()
)
# Employment-arrangement modifiers that survey respondents add to titles: ignored unless
# they are part of the sample's vocabulary (e.g. OSCA "Senior Chef"), and then only
# half-weighted, so "senior software engineer" still codes to Software Engineer.
_MODIFIERS = frozenset(
    """
    senior junior casual part time full fulltime parttime permanent temporary temp
    contract contractor trainee apprentice graduate grad level qualified experienced
    self employed selfemployed currently retired former
    """.split()
)

# Words that name a kind of job without saying which one ("officer", "worker"): a title
# made only of these is vague, however rare the word is in the sample.
_GENERIC = frozenset(
    """
    worker officer assistant operator specialist technician coordinator supervisor manager
    consultant clerk hand attendant engineer labourer staff employee professional team
    leader member helper agent adviser advisor analyst administrator representative executive
    """.split()
)
_GENERIC_FACTOR = 0.6

_TITLE_WEIGHT = 1.0
_KEYWORD_WEIGHT = 0.9
_UNKNOWN_IDF_FACTOR = 1.0  # an unknown query word counts as much as the rarest known word
_RESIDUAL_PRIOR = 0.85


@dataclass(frozen=True)
class Code:
    """One coded answer: a 1- to 6-digit classification code with its label."""

    category: str
    label: str
    confidence: float

    def to_json(self) -> dict[str, object]:
        """Serialise as the ABS API does."""
        return {"codeCategory": self.category, "codeLabel": self.label, "codeConfidence": self.confidence}


@dataclass(frozen=True)
class CodeOutcome:
    """Result of coding one record."""

    status: Literal["successful", "unsuccessful"]
    result: Code | None
    suggestions: tuple[Code, ...]


@dataclass(frozen=True)
class ModelInfo:
    """Model metadata as listed by the ABS ``models`` endpoint."""

    model_id: str
    topic: str
    model_version: str
    release_date: str
    model_type: str
    topic_standard: str
    topic_version: str
    input_format: tuple[str, ...] = ("occp_text", "tasks_text")

    def to_json(self) -> dict[str, object]:
        """Serialise with the camelCase keys of the ABS API."""
        return {
            "modelId": self.model_id,
            "modelVersion": self.model_version,
            "modelReleaseDate": self.release_date,
            "modelType": self.model_type,
            "inputFormat": list(self.input_format),
            "topicStandard": self.topic_standard,
            "topicVersion": self.topic_version,
        }


@dataclass(frozen=True)
class _Params:
    """Decision thresholds of one model version."""

    occupation_confidence: float  # minimum confidence for a 6-digit answer
    occupation_share: float  # minimum share of the evidence for a 6-digit answer
    group_confidence: float  # minimum best-member confidence for a group answer
    group_share: float  # minimum share of the evidence for a group answer
    tasks_weight: float  # how much matching duties can add to a title match


def _stem(word: str) -> str:
    """Very small suffix stripper: plurals, then -ing, -er and a final -e."""
    if len(word) > 3:
        if word.endswith("ies"):
            word = word[:-3] + "y"
        elif word.endswith(("ches", "shes", "sses", "xes")):
            word = word[:-2]
        elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    if len(word) > 4 and word.endswith("er"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


_WORD_STEMS: dict[str, str] = {}  # raw word -> stem ("" for ignored words); bounded below


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _tokenise(text: str) -> tuple[str, ...]:
    """Lowercase, split on non-alphanumerics, drop stopwords and numbers, stem, dedupe."""
    seen: dict[str, None] = {}
    stems = _WORD_STEMS
    for raw in _TOKEN_RE.findall(text.lower()):
        stem = stems.get(raw)
        if stem is None:
            if len(stems) >= _CACHE_SIZE:
                stems.clear()
            ignored = len(raw) < 2 or raw in _STOPWORDS or raw.isdigit()
            stem = stems[raw] = "" if ignored else _stem(raw)
        if stem:
            seen[stem] = None
    return tuple(seen)


_MODIFIER_STEMS = frozenset(_stem(word) for word in _MODIFIERS)
_GENERIC_STEMS = frozenset(_stem(word) for word in _GENERIC)


class _TopicIndex:
    """Inverted index over the 6-digit occupations of one classification."""

    def __init__(self, rows: list[tuple[str, str, str]], fallback: tuple[str, ...]) -> None:
        self.group_labels: dict[str, str] = {}
        self.codes: list[str] = []
        self.labels: list[str] = []
        docs: list[dict[str, float]] = []
        for code, label, keywords in rows:
            if len(code) == 6:
                # A parenthesised qualifier refines the title ("Registered Nurse (Aged Care)")
                # and counts like a keyword; "(General)" only marks the default occupation.
                qualifiers = " ".join(_QUALIFIER_RE.findall(_GENERAL_RE.sub(" ", label)))
                field: dict[str, float] = dict.fromkeys(_tokenise(f"{keywords} {qualifiers}"), _KEYWORD_WEIGHT)
                field.update(dict.fromkeys(_tokenise(_QUALIFIER_RE.sub(" ", label)), _TITLE_WEIGHT))
                self.codes.append(code)
                self.labels.append(label)
                docs.append(field)
            else:
                self.group_labels[code] = label
        count = len(self.codes)
        doc_freq: dict[str, int] = {}
        for doc in docs:
            for token in doc:
                doc_freq[token] = doc_freq.get(token, 0) + 1
        self.idf: dict[str, float] = {t: math.log(1.0 + count / df) for t, df in doc_freq.items()}
        self.unknown_idf = _UNKNOWN_IDF_FACTOR * math.log(1.0 + count)
        postings: dict[str, list[tuple[int, float]]] = {}
        # Residual ("nec") categories only win when nothing more specific fits.
        self.prior: list[float] = [_RESIDUAL_PRIOR if lab.endswith(" nec") else 1.0 for lab in self.labels]
        self.title_mass: list[float] = []
        for index, doc in enumerate(docs):
            mass = 0.0
            for token, weight in doc.items():
                postings.setdefault(token, []).append((index, self.idf[token] * weight))
                if weight == _TITLE_WEIGHT:
                    mass += self.idf[token]
            self.title_mass.append(mass or 1.0)
        self.postings: dict[str, tuple[tuple[int, float], ...]] = {t: tuple(p) for t, p in postings.items()}
        # The 4-, 3-, 2- and 1-digit groups of each occupation, deepest first.
        self.prefixes: list[tuple[str, str, str, str]] = [(c[:4], c[:3], c[:2], c[:1]) for c in self.codes]
        by_code = {code: i for i, code in enumerate(self.codes)}
        chosen = [by_code[c] for c in fallback if c in by_code] or list(range(min(3, count)))
        self.fallback: tuple[int, ...] = tuple(chosen[:3])


class _TitleEvidence:
    """What the job title alone says: the occupations it matches and how well."""

    __slots__ = ("candidates", "has_words", "ids")

    def __init__(self, hits: dict[int, float], total: float, vague: bool) -> None:
        self.ids = hits  # occupation -> matched title weight
        # (occupation, matched title weight, fraction of the title explained)
        scale = _GENERIC_FACTOR if vague else 1.0
        self.candidates = tuple(
            (i, matched, scale * (matched / total if matched < total else 1.0)) for i, matched in hits.items()
        )
        self.has_words = total > 0.0


class CodingModel:
    """One versioned coding model of a topic (``anzsco`` or ``osca``)."""

    info: ModelInfo

    def __init__(self, info: ModelInfo, index: _TopicIndex, params: _Params) -> None:
        self.info = info
        self._index = index
        self._params = params
        self._memo = functools.lru_cache(maxsize=_CACHE_SIZE)(self._code)
        # Survey titles repeat far more than duties do: cache what depends on the title's words.
        self._title_evidence = functools.lru_cache(maxsize=_TITLE_CACHE_SIZE)(self._evidence)
        self._title_outcome = functools.lru_cache(maxsize=_TITLE_CACHE_SIZE)(self._code_title)
        self._nothing = self._fallback()

    def __repr__(self) -> str:
        return f"CodingModel({self.info.topic!r}, {self.info.model_version!r})"

    def code(self, occp_text: str, tasks_text: str) -> CodeOutcome:
        """Code one record; deterministic and memoised on the two texts."""
        return self._memo(occp_text or "", tasks_text or "")

    def _evidence(self, tokens: tuple[str, ...]) -> _TitleEvidence:
        index = self._index
        idf = index.idf
        total = 0.0
        hits: dict[int, float] = {}
        for token in tokens:
            token_idf = idf.get(token)
            if token_idf is None:
                if token not in _MODIFIER_STEMS:
                    total += index.unknown_idf
                continue
            total += 0.5 * token_idf if token in _MODIFIER_STEMS else token_idf
            for i, weight in index.postings[token]:
                hits[i] = hits.get(i, 0.0) + weight
        vague = all(t in _GENERIC_STEMS or t in _MODIFIER_STEMS for t in tokens)
        return _TitleEvidence(hits, total, vague)

    def _code_title(self, tokens: tuple[str, ...]) -> CodeOutcome:
        """Outcome when the duties add nothing (empty, or no word shared with a candidate)."""
        index = self._index
        title_mass = index.title_mass
        prior = index.prior
        confidences: dict[int, float] = {}
        for i, matched, fraction in self._title_evidence(tokens).candidates:
            specificity = min(1.0, matched / title_mass[i])
            confidences[i] = fraction * (0.7 + 0.3 * specificity) * prior[i]
        return self._decide(confidences)

    def _code(self, occp_text: str, tasks_text: str) -> CodeOutcome:
        index = self._index
        idf = index.idf
        postings = index.postings
        title_tokens = _tokenise(occp_text)
        evidence = self._title_evidence(title_tokens)
        tasks = [t for t in _tokenise(tasks_text) if t in idf and t not in title_tokens]
        if evidence.candidates:
            if not tasks:
                return self._title_outcome(title_tokens)
            ids = evidence.ids
            matches: dict[int, float] = {}
            for token in tasks:
                for i, weight in postings[token]:
                    if i in ids:
                        matches[i] = matches.get(i, 0.0) + weight
            if not matches:
                return self._title_outcome(title_tokens)
            task_total = sum(idf[t] for t in tasks)
            lam = self._params.tasks_weight
            title_mass = index.title_mass
            prior = index.prior
            confidences: dict[int, float] = {}
            for i, matched, fraction in evidence.candidates:
                task_matched = matches.get(i, 0.0)
                specificity = (matched + task_matched) / title_mass[i]
                conf = fraction * (0.7 + (0.3 if specificity >= 1.0 else 0.3 * specificity))
                if task_matched:
                    support = task_matched / task_total
                    conf += lam * (1.0 if support >= 1.0 else support) * (1.0 - conf)
                confidences[i] = conf * prior[i]
            return self._decide(confidences)
        if not tasks:
            return self._nothing
        # Nothing in the title is known: code from the duties, with less confidence
        # (and with very little when the title has words the sample does not know).
        scale = self._params.tasks_weight if evidence.has_words else 0.75
        task_total = sum(idf[t] for t in tasks)
        task_hits: dict[int, float] = {}
        for token in tasks:
            for i, weight in postings[token]:
                task_hits[i] = task_hits.get(i, 0.0) + weight
        title_mass = index.title_mass
        prior = index.prior
        confidences = {}
        for i, task_matched in task_hits.items():
            support = task_matched / task_total
            specificity = task_matched / title_mass[i]
            confidences[i] = (
                scale
                * (1.0 if support >= 1.0 else support)
                * (0.7 + (0.3 if specificity >= 1.0 else 0.3 * specificity))
                * prior[i]
            )
        return self._decide(confidences)

    def _decide(self, confidences: dict[int, float]) -> CodeOutcome:
        """Turn candidate confidences into a 6-digit, group or unsuccessful outcome."""
        index = self._index
        params = self._params
        codes = index.codes
        weights: dict[int, float] = {}
        total = 0.0
        top = -1
        top_conf = -1.0
        for i, conf in confidences.items():
            cube = conf * conf * conf
            weight = weights[i] = cube * cube  # conf ** 6 sharpens the distribution
            total += weight
            if conf > top_conf or (conf == top_conf and codes[i] < codes[top]):
                top, top_conf = i, conf
        if top < 0:
            return self._nothing
        top_share = weights[top] / total
        if top_conf >= params.occupation_confidence and top_share >= params.occupation_share:
            return _outcome(codes[top], index.labels[top], _round(top_conf * (0.5 + 0.5 * top_share)))
        if top_conf >= params.group_confidence:
            prefixes = index.prefixes
            for level in range(4):
                shares: dict[str, float] = {}
                best_conf: dict[str, float] = {}
                for i, weight in weights.items():
                    prefix = prefixes[i][level]
                    shares[prefix] = shares.get(prefix, 0.0) + weight
                    if confidences[i] > best_conf.get(prefix, 0.0):
                        best_conf[prefix] = confidences[i]
                prefix = min(shares, key=lambda p: (-shares[p], p))
                share = shares[prefix] / total
                label = index.group_labels.get(prefix)
                if label is not None and share >= params.group_share and best_conf[prefix] >= params.group_confidence:
                    return _outcome(prefix, label, _round(best_conf[prefix] * (0.5 + 0.5 * share)))

        def rank(i: int) -> tuple[float, str]:
            return -confidences[i], codes[i]

        ranked = sorted(confidences, key=rank) if len(confidences) <= 8 else heapq.nsmallest(3, confidences, key=rank)
        suggestions = tuple(
            _intern_code(codes[i], index.labels[i], max(0.01, _round(confidences[i] * math.sqrt(weights[i] / total))))
            for i in ranked[:3]
        )
        return CodeOutcome("unsuccessful", None, suggestions)

    def _fallback(self) -> CodeOutcome:
        """Nothing matched: generic, deterministic, very low-confidence suggestions."""
        index = self._index
        count = len(index.fallback)
        suggestions = tuple(
            _intern_code(index.codes[i], index.labels[i], round(0.01 * (count - rank), 2))
            for rank, i in enumerate(index.fallback)
        )
        return CodeOutcome("unsuccessful", None, suggestions)


# Codes and outcomes are immutable and recur constantly: intern them.
_intern_code = functools.lru_cache(maxsize=_CACHE_SIZE)(Code)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _outcome(category: str, label: str, confidence: float) -> CodeOutcome:
    """A successful outcome."""
    return CodeOutcome("successful", _intern_code(category, label, confidence), ())


def _round(value: float) -> float:
    return round(min(0.99, max(0.0, value)), 2)


def _read_rows(filename: str) -> list[tuple[str, str, str]]:
    text = resources.files(_DATA_PACKAGE).joinpath("data", filename).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    return [(row["code"].strip(), row["label"].strip(), (row.get("keywords") or "").strip()) for row in reader]


_STRICT = _Params(
    occupation_confidence=0.70, occupation_share=0.60, group_confidence=0.50, group_share=0.70, tasks_weight=0.20
)
_CURRENT = _Params(
    occupation_confidence=0.60, occupation_share=0.50, group_confidence=0.45, group_share=0.60, tasks_weight=0.35
)

# topic -> (data file, standard, version, fallback codes, [(GUID, model version, release date, params)])
_CATALOGUE: dict[str, tuple[str, str, str, tuple[str, ...], list[tuple[str, str, str, _Params]]]] = {
    "anzsco": (
        "anzsco.csv",
        "ANZSCO",
        "2022",
        ("899999", "599999", "621111"),
        [
            ("6b1f3c2e-8a4d-4e9b-9c71-2d5e8f0a1b37", "1.0.0", "2023-03-01", _STRICT),
            ("d47a9e15-3c6b-4f28-8e0d-5a1b7c9f2e64", "1.1.0", "2024-06-17", _CURRENT),
        ],
    ),
    "osca": (
        "osca.csv",
        "OSCA",
        "2024",
        ("631131", "851231", "811431"),
        [("a9c3e7f1-5d2b-4a86-b0e4-7f1c3d5a9b28", "1.0.0", "2025-02-10", _CURRENT)],
    ),
}


@functools.cache
def load_models() -> dict[str, list[CodingModel]]:
    """topic -> models, oldest first; the last one is 'latest'. Cached (load once per process).

    The returned mapping is shared; callers must not mutate it.
    """
    models: dict[str, list[CodingModel]] = {}
    for topic, (filename, standard, version, fallback, versions) in _CATALOGUE.items():
        index = _TopicIndex(_read_rows(filename), fallback)
        models[topic] = [
            CodingModel(
                ModelInfo(
                    model_id=guid,
                    topic=topic,
                    model_version=model_version,
                    release_date=release_date,
                    model_type="text-classifier",
                    topic_standard=standard,
                    topic_version=version,
                ),
                index,
                params,
            )
            for guid, model_version, release_date, params in versions
        ]
    return models
