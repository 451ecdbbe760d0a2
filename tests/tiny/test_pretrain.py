import torch

from tools.tiny.pretrain import PretrainConfig, build_model, document_loss, encode_batch, learning_rate
from tools.tiny.synthetic import Multiplication, make_document, shared_prefix
from tools.tiny.tokenizer import build_tokenizer


def _batch(tokenizer):
    docs = [make_document(Multiplication(47, 83), True), make_document(Multiplication(12, 99), False)]
    return docs, encode_batch(docs, tokenizer)


def test_labels_cover_only_model_written_tokens_and_eos():
    tokenizer = build_tokenizer()
    docs, batch = _batch(tokenizer)
    code_doc = docs[0]
    labels = batch["labels"][0]
    trained = tokenizer.decode([t for t in labels.tolist() if t != -100])
    model_text = "".join(text for text, trainable in code_doc.segments if trainable)
    assert trained == model_text + tokenizer.eos_token
    assert batch["attention_mask"][1].sum() == len(docs[1].text) + 1  # the shorter row is padded


def test_shared_prefix_loss_and_gradients_equal_a_full_forward():
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = PretrainConfig(hidden_size=32, layers=2, heads=2, intermediate_size=64)
    model = build_model(config, len(tokenizer), tokenizer.eos_token_id)
    _, batch = _batch(tokenizer)
    prefix_len = len(tokenizer.encode(shared_prefix()))

    full = model(**batch).loss
    full.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shared = document_loss(model, batch, prefix_len)
    shared.backward()

    torch.testing.assert_close(shared, full)
    for expected, param in zip(full_grads, model.parameters()):
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-6)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = PretrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert learning_rate(0, config) == 0.1
    assert learning_rate(9, config) == 1.0
    assert abs(learning_rate(100, config) - 0.1) < 1e-9
