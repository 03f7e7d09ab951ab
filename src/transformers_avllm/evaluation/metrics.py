"""Scoring: answer normalisation, exact / normalised match, multiple-choice letter extraction, CIDEr-D, SPICE status.

CIDEr-D follows the `Cider` scorer of pycocoevalcap 1.2 (the COCO caption evaluation code that the audio-captioning
benchmarks use): n-grams n = 1..4 of the lower-cased, punctuation-stripped tokens, TF-IDF vectors with document
frequencies taken from the evaluated set's references (idf = log(#clips) - log(max(1, df))), the candidate's
weights clipped at the reference's, a Gaussian length penalty exp(-delta^2 / (2 sigma^2)) with sigma = 6, the mean over
n, the mean over references, times 10.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import string
from collections import Counter
from pathlib import Path

# ---- open-ended answers ------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans({char: " " for char in string.punctuation})


def normalize_answer(text: str) -> str:
    """Lower case, punctuation -> spaces, articles (a, an, the) removed, whitespace collapsed (SQuAD-style)."""
    text = str(text).lower().translate(_PUNCT_TABLE)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: list[str]) -> bool:
    """The stripped prediction equals one of the stripped references (case-sensitive)."""
    return any(str(prediction).strip() == str(reference).strip() for reference in references)


def normalized_match(prediction: str, references: list[str]) -> bool:
    """`normalize_answer(prediction)` equals `normalize_answer` of one of the references."""
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(reference) for reference in references)


# ---- multiple choice ---------------------------------------------------------------------------------------------

LETTERS = string.ascii_uppercase


def choice_letter(index: int) -> str:
    """The letter of option `index` ("A", "B", ...) as prompts show it and `extract_choice` reads it."""
    return LETTERS[index]


def extract_choice(prediction: str, choices: list[str]) -> int | None:
    """Index of the option a free-text reply picks, or None when it names none (or several).

    Understands "(B)", "B.", "B)", "B:", a reply that is just "B", "Answer: b", "the answer is option C", and the
    option text itself ("a red square", with or without its article / punctuation). Lower-case letters count only
    in parentheses or after "answer" / "option": a reply starting "a dog ..." is not option A.
    """
    text = str(prediction).strip()
    valid = LETTERS[: len(choices)]
    if not text or not choices:
        return None
    patterns = [
        rf"^\(?([{valid}])\)?\s*$",  # "B", "(B)"
        rf"(?i:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[:\s]*\(?([{valid}])\b",  # "answer is B"
        rf"(?i:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[:\s]*\(?([{valid.lower()}])(?:[.):,\]]|\s*$)",
    ]
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return valid.index(match.group(1).upper())
    # Option markers: "B. text", "B) text", "(B) text", "B: text" at the start, "(b)" anywhere; several -> None.
    marked = {letter.upper() for letter in re.findall(rf"\(([{valid}{valid.lower()}])\)", text)}
    leading = re.match(rf"^\(?([{valid}])(?:[.):\]]|\s*-\s)", text)
    marked |= {leading.group(1)} if leading else set()
    if marked:
        return valid.index(marked.pop()) if len(marked) == 1 else None
    normalized = normalize_answer(text)
    options = [normalize_answer(choice) for choice in choices]
    if normalized in options and options.count(normalized) == 1:
        return options.index(normalized)
    padded = f" {normalized} "
    contained = [index for index, option in enumerate(options) if option and f" {option} " in padded]
    if len(contained) > 1:  # keep the longest when one option's text contains another's
        longest = max(len(options[index]) for index in contained)
        contained = [index for index in contained if len(options[index]) == longest]
    return contained[0] if len(contained) == 1 else None


# ---- CIDEr-D -----------------------------------------------------------------------------------------------------

# pycocoevalcap's PTBTokenizer runs Stanford's tokenizer with -lowerCase, then drops its PUNCTUATIONS list; brackets
# come out as -lrb- / -rrb- (lower-cased, so its "-LRB-" entries never match and they stay), like "&".
_DROPPED_TOKENS = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"'}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_EDGE_MARKS = set(".,!?;:\"'`-") | set(_BRACKETS)
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
# Words the PTB lexer splits in two, and "'n'" which it keeps whole.
_SPLIT_WORDS = {
    "cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"],
    "lemme": ["lem", "me"], "gimme": ["gim", "me"], "'tis": ["'t", "is"], "'twas": ["'t", "was"], "'n'": ["'n'"],
}  # fmt: skip
# Abbreviations that keep their final period: letter-period runs ("u.s.", "e.g.", "a.m.") and common titles.
_ABBREVIATION = re.compile(r"^(?:[a-z]\.)+[a-z]$|^(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|prof)$")
_INNER_BREAK = re.compile(r"-{2,}|\.{3,}")  # "dog--cat", "wait...what": dropped separators


def tokenize_caption(text: str) -> list[str]:
    """Lower-cased tokens without punctuation, as pycocoevalcap's PTBTokenizer pass gives them: marks peeled off the
    ends of words and dropped, clitics split ("dog's" -> "dog 's", "isn't" -> "is n't", "cannot" -> "can not"),
    brackets kept as "-lrb-" / "-rrb-", inner marks kept ("3.5", "km/h", "well-known"), abbreviations kept whole
    ("u.s.", "e.g.", "mr."), runs of "!" / "?" kept as one token ("!!", "?!": not on pycocoevalcap's list).

    A pure-Python approximation of the Java tokenizer (Stanford CoreNLP 3.4.1, `-lowerCase`): tests compare the two
    on captions with punctuation and clitics. Known differences, rare in captions: "50%" / "$5" / "#1" (PTB splits
    the symbol off), "x...y" (PTB: "x. y"), "y'all" (PTB: "y' all")."""
    tokens = []
    for word in _INNER_BREAK.sub(" ", str(text).replace("\n", " ").lower()).split():
        lead, trail = [], []
        while word and word not in _SPLIT_WORDS and word[-1] in _EDGE_MARKS:
            run = len(word) - len(word.rstrip("!?")) if word[-1] in "!?" else 1
            trail.insert(0, word[-run:])
            word = word[:-run]
        if trail and trail[0] == "." and _ABBREVIATION.match(word):
            word, trail = word + ".", trail[1:]
        while word and word not in _SPLIT_WORDS and word[0] in _EDGE_MARKS:
            lead.append(word[0])
            word = word[1:]
        core = _SPLIT_WORDS.get(word, [])
        while not core and (clitic := _CLITIC.match(word)):  # "i'd've" -> "i 'd 've"
            word, suffix = clitic.groups()
            trail.insert(0, suffix)
        core = core or ([word] if word else [])
        for token in lead + core + trail:
            token = _BRACKETS.get(token, token)
            if token not in _DROPPED_TOKENS:
                tokens.append(token)
    return tokens


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider_d(
    candidates: dict[str, str],
    references: dict[str, list[str]],
    n: int = 4,
    sigma: float = 6.0,
    tokenize: bool = True,
) -> tuple[float, dict[str, float]]:
    """CIDEr-D of candidate captions against their references: `(corpus score, {id: score})`.

    `candidates`: id -> one caption; `references`: id -> its reference captions (same ids). With `tokenize=False` the
    strings are taken as already tokenised (split on whitespace), as pycocoevalcap's `Cider.compute_score` takes them.
    Matches pycocoevalcap 1.2 `Cider` to floating-point precision. Its caption length is the number of bigrams (`if
    n == 1: length += term_freq`), kept here as it computes it; the length penalty only sees differences of lengths,
    which equal the word-count differences for non-empty captions, and an empty caption scores 0 either way.
    """
    if set(candidates) != set(references):
        raise ValueError("candidates and references must have the same ids")
    if not candidates:
        raise ValueError("no captions to score")
    split = tokenize_caption if tokenize else str.split
    ids = list(candidates)
    test_counts = {key: _ngram_counts(split(candidates[key]), n) for key in ids}
    ref_counts = {key: [_ngram_counts(split(ref), n) for ref in references[key]] for key in ids}
    if any(not refs for refs in ref_counts.values()):
        raise ValueError("every candidate needs at least one reference")
    document_frequency: Counter = Counter()
    for refs in ref_counts.values():
        document_frequency.update({gram for ref in refs for gram in ref})
    log_num_docs = math.log(float(len(ids)))

    def vectorize(counts: Counter):
        vectors = [{} for _ in range(n)]
        norms = [0.0] * n
        for gram, term_frequency in counts.items():
            order = len(gram) - 1
            weight = term_frequency * (log_num_docs - math.log(max(1.0, document_frequency[gram])))
            vectors[order][gram] = weight
            norms[order] += weight * weight
        length = sum(count for gram, count in counts.items() if len(gram) == 2)  # bigrams, as pycocoevalcap
        return vectors, [math.sqrt(value) for value in norms], length

    def similarity(test, ref) -> list[float]:
        (vec_t, norm_t, len_t), (vec_r, norm_r, len_r) = test, ref
        penalty = math.exp(-((len_t - len_r) ** 2) / (2 * sigma**2))
        values = []
        for order in range(n):
            value = sum(
                min(weight, vec_r[order].get(gram, 0.0)) * vec_r[order].get(gram, 0.0)
                for gram, weight in vec_t[order].items()
            )
            if norm_t[order] != 0 and norm_r[order] != 0:
                value /= norm_t[order] * norm_r[order]
            values.append(value * penalty)
        return values

    scores = {}
    for key in ids:
        test = vectorize(test_counts[key])
        totals = [0.0] * n
        for ref in ref_counts[key]:
            totals = [a + b for a, b in zip(totals, similarity(test, vectorize(ref)), strict=True)]
        scores[key] = sum(totals) / n / len(ref_counts[key]) * 10.0
    return sum(scores.values()) / len(scores), scores


# ---- SPICE / SPIDEr ----------------------------------------------------------------------------------------------


def spice_status() -> tuple[bool, str]:
    """Whether SPICE can run here, and why not: it needs Java, pycocoevalcap (its spice-1.0.jar) and the Stanford
    CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use (never downloaded from here)."""
    if shutil.which("java") is None:
        return False, "SPICE needs a Java runtime (none on PATH)"
    spec = None
    try:  # pycocoevalcap is a namespace package (no __file__): locate its spice module instead
        spec = importlib.util.find_spec("pycocoevalcap.spice.spice")
    except ImportError:
        pass
    if spec is None or not spec.origin:
        return False, "SPICE needs pycocoevalcap (pip install pycocoevalcap), which ships spice-1.0.jar"
    lib = Path(spec.origin).parent / "lib"
    missing = [
        name
        for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
        if not (lib / name).exists()
    ]
    if missing:
        return False, (
            f"SPICE needs the Stanford CoreNLP models in {lib} ({', '.join(missing)} missing; "
            "pycocoevalcap's get_stanford_models() downloads them)"
        )
    return True, "available"


def spice(candidates: dict[str, str], references: dict[str, list[str]]) -> tuple[float, dict[str, float]]:
    """SPICE F-score through pycocoevalcap (Java). Call only when `spice_status()` says it is available."""
    from pycocoevalcap.spice.spice import Spice

    available, reason = spice_status()
    if not available:
        raise RuntimeError(reason)
    ids = sorted(candidates)
    gts = {key: [" ".join(tokenize_caption(ref)) for ref in references[key]] for key in ids}
    res = {key: [" ".join(tokenize_caption(candidates[key]))] for key in ids}
    score, per_clip = Spice().compute_score(gts, res)
    return float(score), {key: float(item["All"]["f"]) for key, item in zip(ids, per_clip, strict=True)}


def mean(values) -> float | None:
    values = [value for value in values if value is not None]
    return sum(values) / len(values) if values else None
