"""The main job, reduced: synthetic data -> two training stages -> grounding checks -> export -> reload and answer."""

import json
import random
import subprocess
import sys
from collections import Counter

from huggingface_hub import ModelCard

from transformers_avllm.cli import main
from transformers_avllm.data.synth import CHANCE, COLOURS, PITCHES, balanced_specs, synthesize
from transformers_avllm.export import check_export_folder


def test_synthetic_data_is_deterministic_and_answers_follow_the_clip(tmp_path):
    first = synthesize(tmp_path / "a", num_train=4, num_test=2, seed=3)
    second = synthesize(tmp_path / "b", num_train=4, num_test=2, seed=3)
    rows = [json.loads(line) for line in first["train"].read_text().splitlines()]
    assert first["train"].read_text().replace("/a/", "/b/") == second["train"].read_text()
    assert len(rows) == 12 and {row["kind"] for row in rows} == {"visual", "audio", "audio_visual"}
    for row in rows:
        spec = row["spec"]
        expected = {
            "visual": spec["colours"][0],
            "audio": spec["pitches"][0],
            "audio_visual": spec["colours"][spec["pitches"].index("high")],
        }[row["kind"]]
        assert row["answer"] == expected and row["answer"] in set(COLOURS) | set(PITCHES)
    media = {row["kind"]: row["messages"][0]["content"][0] for row in rows}
    assert media["visual"] == {"type": "video", "path": media["visual"]["path"], "use_audio": False}
    assert media["audio"]["type"] == "audio" and media["audio_visual"]["use_audio"] is True
    assert (tmp_path / "a" / "muted").is_dir() and len(list((tmp_path / "a" / "blanked").iterdir())) == 2


def test_clips_are_byte_identical_from_one_process_to_the_next(tmp_path):
    """The same seed writes the same mp4 bytes in separate processes (x264's settings in `media_writer`)."""
    script = "import sys; from transformers_avllm.data.synth import synthesize; synthesize(sys.argv[1], 12, 4, seed=5)"
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name)]) for name in ("a", "b")]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    clips = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*.mp4"))
    assert len(clips) == 24
    first, second = ({clip: (tmp_path / name / clip).read_bytes() for clip in clips} for name in ("a", "b"))
    differing = [str(clip) for clip in clips if first[clip] != second[clip]]
    assert differing == []


def test_test_split_is_balanced_so_ignoring_a_modality_scores_chance():
    specs = balanced_specs(48, random.Random(0))
    assert Counter(specs).most_common()[-1][1] == 2 and len(set(specs)) == 24  # every combination twice
    for kind, chance in CHANCE.items():
        answers = Counter(spec.answers[kind] for spec in specs)
        if kind != "audio_visual":
            assert set(answers.values()) == {round(48 * chance)}  # each colour / pitch equally often
    assert set(Counter(spec.answers["audio_visual"] for spec in specs).values()) == {12}
    assert specs[:24] != specs[24:]  # each cycle shuffled anew


def test_reduced_demo_completes_and_beats_chance(tmp_path):
    main(["demo", "--quick", "--output-dir", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    accuracy = report["accuracy"]
    assert accuracy["normal"]["visual"] >= CHANCE["visual"] + 0.4
    assert accuracy["normal"]["audio"] >= CHANCE["audio"] + 0.3
    # it watches and it listens: blank the frames and the colours go, mute the sound and the pitches go
    assert accuracy["blanked"]["visual"] <= CHANCE["visual"] + 0.15
    assert accuracy["muted"]["audio"] <= CHANCE["audio"] + 0.15
    assert (tmp_path / "report.png").stat().st_size > 10_000
    check_export_folder(report["hub_folder"])
    assert ModelCard.load(f"{report['hub_folder']}/README.md").data.pipeline_tag == "any-to-any"
    assert report["example"]["answer_after_reload"] in set(COLOURS)
    assert (
        report["loss_curves"]["stage 2 (projectors + LLM)"][-1][1]
        < report["loss_curves"]["stage 1 (projectors)"][0][1]
    )
