"""The output layer and the cross-entropy loss in one, a chunk of tokens at a time.

`F.cross_entropy(x @ W.T, targets)` first builds the logits, one float per token and vocabulary
entry: 64 x 1024 x 50,304 x 4 bytes = 13 GB for a GPT-2 micro batch, which autograd then keeps
for the backward pass. linear_cross_entropy computes the same loss, but for each chunk of tokens
it makes the logits, the loss and (when training) the gradients at once, then frees the logits.
The gradient of cross-entropy with respect to the logits is softmax(logits) - one_hot(target),
so the chunk's gradients are two matmuls away, and backward() only has to scale them: nothing
is recomputed, and at most one chunk of logits is ever in memory.

The arithmetic is the plain path's: the matmuls run in autocast's dtype exactly as nn.Linear
would, the softmax in float32 over the first vocab_size columns (padding columns get -inf).
"""
import torch

IGNORE = -1  # a target of -1 adds nothing to the loss (HellaSwag scores only the ending tokens)

# Logits per chunk, in bytes of float32. Each chunk also adds its share to the (vocab x C) weight
# gradient, one pass over it, so chunks should not be tiny: on a CPU, 64 MB (333 GPT-2 rows) was
# the fastest measured size (bench/step_speed.py); a GPU wants big chunks, each a few large kernels
# (8,192 x 50,304 floats is 1.6 GB).
CHUNK_BYTES = {"cpu": 64 << 20, "cuda": 1600 << 20}
DEFAULT_CHUNK_BYTES = 256 << 20


def chunk_rows(n_columns, device_type):
    return max(1, CHUNK_BYTES.get(device_type, DEFAULT_CHUNK_BYTES) // (4 * n_columns))


def _chunk_logits(x, weight, vocab_size):
    """float32 logits of a chunk over all of weight's rows (the padded width keeps the matmul
    fast on GPUs), with the padding columns at -inf so that the softmax never sees them."""
    logits = (x @ weight.t()).float()  # under autocast: a bf16 matmul, as nn.Linear's
    logits[:, vocab_size:] = float("-inf")
    return logits


def _softmax_and_loss(logits, targets):
    """Each token's cross-entropy (0 where the target is IGNORE), turning `logits` into the softmax
    in place: d loss / d logits = softmax - one_hot(target), so the gradient is one subtraction
    away (ignored tokens' rows become 0). Four passes over the chunk, no temporary of its size."""
    valid = targets != IGNORE
    picked = logits.gather(1, targets.clamp(min=0)[:, None])
    top = logits.amax(dim=1, keepdim=True)
    probs = logits.sub_(top).exp_()  # exp(logit - max) <= 1: cannot overflow
    total = probs.sum(dim=1, keepdim=True)
    losses = (top + total.log() - picked).squeeze(1) * valid  # log-sum-exp minus the target's logit
    probs.div_(total.masked_fill_(~valid[:, None], float("inf")))
    return losses, probs


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, vocab_size, need_grad):
        rows = chunk_rows(weight.size(0), x.device.type)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if need_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_grad else None
        for start in range(0, x.size(0), rows):
            xc, tc = x[start:start + rows], targets[start:start + rows]
            losses, probs = _softmax_and_loss(_chunk_logits(xc, weight, vocab_size), tc)
            total += losses.sum()
            if need_grad:  # d loss / d logits = softmax - one_hot(target), zero for ignored tokens
                probs[torch.arange(len(tc), device=tc.device), tc.clamp(min=0)] -= (tc != IGNORE).float()
                if torch.is_autocast_enabled(x.device.type):  # in bf16/fp16, as nn.Linear's backward
                    grad_x[start:start + rows] = probs @ weight
                    grad_weight += probs.t() @ xc
                else:  # float32, in place: no fresh (vocab x C) product to page in for every chunk
                    torch.mm(probs, weight, out=grad_x[start:start + rows])
                    grad_weight.addmm_(probs.t(), xc)
        count = (targets != IGNORE).sum().clamp(min=1)
        ctx.save_for_backward(grad_x, grad_weight, count)
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_weight, count = ctx.saved_tensors
        scale = grad_output / count  # the loss is the mean over the scored tokens
        return grad_x.mul_(scale), grad_weight.mul_(scale), None, None, None


def linear_cross_entropy(x, weight, targets, vocab_size, reduction="mean"):
    """cross_entropy(x @ weight.T restricted to the first vocab_size columns, targets).

    x: (..., C) activations; weight: (V_padded, C), e.g. a tied embedding; targets: (...) token
    ids, IGNORE to skip. reduction "mean" (over the scored tokens, differentiable) or "none"
    (per-token float32 losses shaped like targets, 0 where IGNORE; for evaluation only: the
    ignored tokens cost nothing, so HellaSwag pays only for its ending tokens' logits)."""
    flat_x, flat_targets = x.reshape(-1, x.size(-1)), targets.reshape(-1)
    if reduction == "none":  # evaluation: logits only for the scored tokens, in chunks
        with torch.no_grad():
            losses = torch.zeros(flat_targets.shape, dtype=torch.float32, device=x.device)
            scored = (flat_targets != IGNORE).nonzero().squeeze(1)
            rows = chunk_rows(weight.size(0), x.device.type)
            for start in range(0, len(scored), rows):
                at = scored[start:start + rows]
                losses[at] = _softmax_and_loss(_chunk_logits(flat_x[at], weight, vocab_size),
                                               flat_targets[at])[0]
            return losses.view(targets.shape)
    need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(flat_x, weight, flat_targets, vocab_size, need_grad)
