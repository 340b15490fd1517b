"""SFT data and training: exact label masking, padded batches that train exactly like single sequences."""

import json

import numpy as np
import pytest
import torch

from longlora_mini import data
from longlora_mini.extend import apply_method, load_extended, set_attention
from longlora_mini.files import MODEL_DIR
from longlora_mini.loss import summed_next_token_loss
from longlora_mini.sft import IGNORE_INDEX, collate, encode, labelled_tokens, load_items, prepare, prompt_text
from longlora_mini.train import TrainConfig, train


@pytest.fixture(scope="module")
def tokenizer():
    return data.load_tokenizer()


def test_label_masking_on_a_hand_example(tokenizer):
    item = {"instruction": "Who speaks first?", "input": "BERNARDO. Who's there?", "output": "Bernardo"}
    prompt = prompt_text(item, "llama2")
    assert prompt.startswith("[INST] <<SYS>>\n") and prompt.endswith(" Who speaks first? \nBERNARDO. Who's there? [/INST]")
    ids, labels = encode(item, tokenizer, "llama2")
    prompt_len = 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # BOS + prompt
    answer = tokenizer(" Bernardo", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] == answer + [tokenizer.eos_token_id]
    assert len(ids) == len(labels) == prompt_len + len(answer) + 1


def test_the_plain_template_puts_the_answer_right_after_the_question(tokenizer):
    item = {"instruction": "Which word comes right after: Who's", "output": "there"}
    assert prompt_text(item, "plain") == "Which word comes right after: Who's"  # no wrapper tokens in between
    ids, labels = encode(item, tokenizer, "plain")
    prompt = tokenizer(item["instruction"], add_special_tokens=False)["input_ids"]
    answer = tokenizer(" there", add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    assert ids == bos + prompt + answer + [tokenizer.eos_token_id]
    assert labels == [IGNORE_INDEX] * (len(bos) + len(prompt)) + answer + [tokenizer.eos_token_id]
    assert prompt_text({"instruction": "Q", "input": "text", "output": "a"}, "plain") == "Q \ntext"


def test_items_that_do_not_fit_are_dropped_and_reported(tokenizer, tmp_path):
    items = [{"instruction": "a", "output": "b"}, {"instruction": "long " * 400, "output": "x"},
             {"instruction": "c", "output": "  "}]
    prepared = prepare(items, tokenizer, "llama2", max_length=256)
    assert len(prepared.examples) == 1
    assert prepared.dropped == {"longer than 256 tokens": 1, "with an empty output": 1}
    assert "1 items kept" in prepared.report()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "answer": "b"}]))
    with pytest.raises(ValueError, match="item 0 .* needs a string 'output'"):
        load_items(bad)
    with pytest.raises(ValueError, match="chat template"):
        prompt_text(items[0], "chat", tokenizer)


def test_collate_pads_right_and_masks_labels(tokenizer):
    a = (np.array([5, 6, 7]), np.array([IGNORE_INDEX, 6, 7]))
    b = (np.array([8, 9]), np.array([IGNORE_INDEX, 9]))
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 9, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labelled_tokens([a, b]) == 3
    assert "attention_mask" not in collate([a, a], pad_id=0)  # equal lengths: no mask, the fast path


@pytest.mark.parametrize("attention", ["s2", "short"])
def test_a_padded_s2_batch_trains_exactly_like_each_sequence_alone(attention):
    model = apply_method(load_extended(MODEL_DIR, 512), "lora+")
    set_attention(model, attention, group_size=128)  # what the trainer does: one group size for every batch
    model.train()
    torch.manual_seed(0)
    examples = []
    for n, prompt in ((300, 100), (180, 50), (512, 200)):
        ids = torch.randint(3, model.config.vocab_size, (n,)).numpy()
        labels = ids.copy()
        labels[:prompt] = IGNORE_INDEX
        examples.append((ids, labels))
    params = [p for p in model.parameters() if p.requires_grad]

    def grads_and_loss(batch_examples):
        model.zero_grad(set_to_none=True)
        loss, tokens = summed_next_token_loss(model, collate(batch_examples, pad_id=0))
        loss.backward()
        return [p.grad.clone() for p in params], loss.item(), tokens

    batch_grads, batch_loss, batch_tokens = grads_and_loss(examples)
    alone = [grads_and_loss([e]) for e in examples]
    assert batch_tokens == sum(t for _, _, t in alone) == labelled_tokens(examples)
    assert batch_loss == pytest.approx(sum(l for _, l, _ in alone), rel=1e-5)
    for i, g in enumerate(batch_grads):
        # fp32 sums in another order: the embedding's gradient (512 rows, each token seen often) differs by ~4e-5
        torch.testing.assert_close(g, sum(a[0][i] for a in alone), atol=1e-4, rtol=1e-3)


def test_sft_runs_in_the_trainer_with_padded_batches(tokenizer, tmp_path):
    items = [{"instruction": f"What is {i} plus {i}?", "input": "Numbers. " * (i % 7), "output": str(2 * i)} for i in range(40)]
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(items))
    config = TrainConfig(data=str(path), output_dir=str(tmp_path / "run"), context_length=512, batch_size=4,
                         grad_accum=1, max_steps=3, lr=2e-3, warmup_steps=1, save_every=0, report_to="none")
    report = train(config, show_progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert "val_loss_before" not in report  # an SFT file has no validation split here
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").exists()
