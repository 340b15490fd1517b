"""Mini-RULER: prompts of exact length with needles at their depth, deterministic by seed, RULER's scoring and
effective length, clear errors, and one smoke evaluation of the committed base model."""

import collections
import json
import random
import re
from argparse import Namespace

import pytest

from longlora_mini import cli, ruler
from longlora_mini.data import load_tokenizer
from longlora_mini.files import MODEL_DIR
from longlora_mini.lab.pretrain import MixedRows, PretrainConfig


@pytest.fixture(scope="module")
def source():
    return ruler.Source(load_tokenizer())


def text_of(source, ids) -> str:
    return source.tokenizer.decode(ids)


@pytest.mark.parametrize("task", ruler.TASK_NAMES)
@pytest.mark.parametrize("length", [256, 1024])
def test_every_prompt_has_its_length_exactly_and_its_answer_fits_the_budget(source, task, length):
    budget = ruler.TASKS[task].budget
    for sample in ruler.make_items(task, source, length, 20, seed=3):
        assert len(sample.input_ids) == length - budget
        assert len(sample.target_ids) <= budget
        assert sample.answers and all(a.lower() in text_of(source, sample.target_ids).lower() for a in sample.answers)


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_the_single_needle_sits_at_the_asked_depth(source, depth):
    sample = ruler.make_sample("niah_single", source, 512, random.Random(1), depth=depth)
    head = len(source.encode(ruler.NIAH_HEAD.replace("Some", "A").replace("are", "is").replace("numbers", "number")
                             .replace("them", "it")))
    (key_value,) = re.findall(r"One of the numbers for (\w+) is: (\d+)\.", text_of(source, sample.input_ids))
    needle = source.encode(ruler.NIAH_NEEDLE.format(key=key_value[0], value=key_value[1]))
    tail = source.encode(f"\nWhat is the number for {key_value[0]}? The number for {key_value[0]} is")
    room = len(sample.input_ids) - head - len(needle) - len(tail)
    assert sample.needle_starts == [head + round(depth * room)]
    assert sample.input_ids[sample.needle_starts[0] : sample.needle_starts[0] + len(needle)] == needle
    assert sample.input_ids[-len(tail):] == tail and sample.answers == [key_value[1]]


@pytest.mark.parametrize("task, needles", [("niah_multikey", 4), ("niah_multivalue", 4), ("niah_multiquery", 4),
                                           ("vt", 5)])
def test_several_needles_lie_at_sorted_depths_and_hold_the_answers(source, task, needles):
    for sample in ruler.make_items(task, source, 1024, 10, seed=0):
        assert len(sample.needle_starts) == needles and sample.depths == sorted(sample.depths)
        lines = [text_of(source, sample.input_ids[s : s + 40]).strip().split("\n")[0] for s in sample.needle_starts]
        assert all(line.startswith("One of the numbers for" if task != "vt" else "VAR ") for line in lines), lines
        found = [a for a in sample.answers if any(a in line for line in lines)]
        assert found == sample.answers


def test_the_multikey_answer_is_the_value_of_the_asked_key_only(source):
    for sample in ruler.make_items("niah_multikey", source, 512, 20, seed=0):
        text = text_of(source, sample.input_ids)
        pairs = dict(re.findall(r"One of the numbers for (\w+) is: (\d+)\.", text))
        (asked,) = re.findall(r"What is the number for (\w+)\?", text)
        assert len(pairs) == 4 and sample.answers == [pairs[asked]]


def test_variable_tracking_answers_are_the_chain_followed_from_the_value(source):
    for sample in ruler.make_items("vt", source, 512, 20, seed=0):
        text = text_of(source, sample.input_ids)
        (value,) = re.findall(r"assigned the value (\d+)\.", text)
        assigned = dict(re.findall(r"VAR (\w+) = (?:VAR )?(\w+)\.", text))
        chain, wanted = [], {value}
        for name, source_of in assigned.items():  # the lines come in chain order
            if source_of in wanted:
                chain.append(name)
                wanted.add(name)
        assert chain == sample.answers and len(chain) == ruler.VT_HOPS + 1


def test_common_words_appear_six_times_and_the_others_once(source):
    for sample in ruler.make_items("cwe", source, 1024, 10, seed=0):
        listed = text_of(source, sample.input_ids).split("\n")[1].split()
        counts = collections.Counter(listed)
        assert sorted(w for w, n in counts.items() if n > 1) == sorted(sample.answers)
        assert {counts[w] for w in sample.answers} == {ruler.CWE_REPEATS} and set(counts.values()) == {1, 6}


def test_frequent_words_are_the_three_most_frequent_coded_words(source):
    for length in (256, 2048):
        for sample in ruler.make_items("fwe", source, length, 10, seed=0):
            words = text_of(source, sample.input_ids).split("\n")[1].split()
            counts = collections.Counter(w for w in words if not w.startswith("..."))
            ranked = [w for w, _ in counts.most_common()]
            assert ranked[:3] == sample.answers and counts[ranked[2]] > counts[ranked[3]]
            assert sum(w.startswith("...") for w in words) > counts[ranked[0]]  # the noise word ranks first


def test_the_qa_phrase_is_quoted_from_the_text_near_the_asked_depth(source):
    for depth in (0.1, 0.5, 0.9):
        sample = ruler.make_sample("qa", source, 1024, random.Random(2), depth=depth)
        start, text = sample.needle_starts[0], text_of(source, sample.input_ids)
        phrase = text.rpartition("Which word comes right after:")[2].removesuffix("\nAnswer:")
        assert text.count(phrase) == 2  # once in the passage, once in the question
        after = text_of(source, sample.input_ids[start:])
        assert after.startswith(phrase) and re.match(r"[ ,;:!?]*" + sample.answers[0], after[len(phrase):])
        assert abs(sample.depths[0] - depth) < 0.1


def test_items_are_deterministic_by_seed(source):
    for task in ruler.TASK_NAMES:
        first, again = (ruler.make_items(task, source, 512, 3, seed=7) for _ in range(2))
        other = ruler.make_items(task, source, 512, 3, seed=8)
        assert [s.input_ids for s in first] == [s.input_ids for s in again]
        assert [s.input_ids for s in first] != [s.input_ids for s in other]


def test_scores_are_rulers_string_matches():
    predictions = ["12345 and 678", "nothing here", "Alpha, BETA"]
    references = [["12345", "678"], ["1"], ["alpha", "beta", "gamma"]]
    assert ruler.string_match_all(predictions, references) == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert ruler.string_match_part(predictions, references) == pytest.approx(2 / 3)
    assert ruler.postprocess("  42\x0c then\t ") == "42\n then"


def test_effective_length_is_the_longest_run_of_lengths_at_or_above_the_threshold():
    average = {"256": 0.8, "512": 0.6, "1024": 0.7, "2048": 0.2}
    assert ruler.effective_length(average, 0.65) == 256  # 1024 passes again, but only after 512 fell below
    assert ruler.effective_length(average, 0.6) == 1024  # at the threshold counts as passing
    assert ruler.effective_length(average, 0.1) == 2048
    assert ruler.effective_length(average, 0.9) is None  # RULER's "<4K": below at the shortest length


def test_bad_input_is_refused_with_what_is_allowed(source):
    with pytest.raises(ValueError, match=r"unknown mini-RULER task\(s\) \['niah'\]: choose from niah_single, "):
        ruler.make_sample("niah", source, 256, random.Random(0))
    too_short = r"length 120 is too short for niah_multiquery: its prompt needs at least \d+ tokens .*\(lengths of at least \d+ "
    with pytest.raises(ValueError, match=too_short):
        ruler.make_sample("niah_multiquery", source, 120, random.Random(0))
    with pytest.raises(ValueError, match="pass the model's tokenizer"):
        ruler.evaluate_suite(None, None, ["vt"], [256], 1)


def test_the_command_line_names_an_unknown_task_and_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "ruler", "--model", "mini", "--tasks", "niah_single,needle"])
    assert exit_.value.code == 2
    assert "unknown mini-RULER task(s) ['needle']: choose from niah_single, " in capsys.readouterr().err


def test_a_model_folder_without_its_tokenizer_is_refused(tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(MODEL_DIR / name)
    with pytest.raises(ValueError, match=rf"{tmp_path} holds no tokenizer .*tokenizer.save_pretrained"):
        ruler.main_ruler(Namespace(model=str(tmp_path), lengths=[256], items=1, json=None))


def test_the_committed_base_runs_the_suite_and_its_own_threshold_sets_its_effective_length(tmp_path):
    out, plot = tmp_path / "ruler.json", tmp_path / "ruler.png"
    assert cli.main(["eval", "ruler", "--model", "mini", "--lengths", "256,512", "--items", "2", "--json", str(out),
                     "--plot", str(plot), "--smoke"]) == 0
    result = json.loads(out.read_text())
    assert set(result["scores"]) == set(ruler.TASK_NAMES) and plot.stat().st_size > 10_000
    average = result["average"]
    assert result["threshold"] == average["256"]  # the base is its own threshold: its average in its window
    assert result["effective_length"] == (512 if average["512"] >= average["256"] else 256)
    for task, by_length in result["scores"].items():
        references = len(result["examples"][task]["256"]["answers"])
        assert all(0 <= score <= 1 for score in by_length.values())
        assert by_length["256"] * 2 * references == pytest.approx(round(by_length["256"] * 2 * references))


def test_pretraining_ruler_rows_hold_a_whole_item_and_its_answer_from_the_train_split():
    tokenizer = load_tokenizer()
    config = PretrainConfig(ruler_share=1.0, passkey_share=0.0, repeat_share=0.0)
    rows = MixedRows(config, tokenizer, random.Random(0))
    eos = re.escape(tokenizer.eos_token)
    answered = {  # each task's head, and its answer prefix with the answer and EOS right after
        "niah": (r"numbers? (are|is) hidden", r"The numbers? for [^?]+? (?:are|is) \d{5}(, \d{5})*\." + eos),
        "vt": (ruler.VT_HEAD.strip(), r"They are:( [A-Z]{3}){5}\." + eos),
        "cwe": (ruler.CWE_HEAD.strip(), r"They are: [a-z]+, [a-z]+, [a-z]+\." + eos),
        "fwe": (ruler.FWE_HEAD.strip(), r"words are: [a-z]{2}, [a-z]{2}, [a-z]{2}\." + eos),
        "qa": (ruler.QA_HEAD.strip(), r"\nAnswer: [A-Za-z]+" + eos),
    }
    seen = collections.Counter()
    for _ in range(60):
        row = rows.row()
        text = tokenizer.decode(row)
        kinds = [kind for kind, (head, answer) in answered.items() if re.search(head, text) and re.search(answer, text)]
        assert len(row) == config.seq_len and len(kinds) == 1, text
        seen[kinds[0]] += 1
    assert set(seen) == set(answered), seen
    assert rows.ruler_source.words != ruler.Source(tokenizer).words  # keys and listed words of the train split
