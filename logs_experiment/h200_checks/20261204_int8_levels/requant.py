# On the GPU box: the val_bpb cost of coarser int8 steps on a trained model. Loads a shipped int8 artifact,
# re-quantises its weights at fewer levels, and evaluates each on the full validation split (eager).
import io, sys, time, zlib
import torch
sys.path.insert(0, "/tmp/g/repo")
import train_gpt as tg
artifact, seq_len = sys.argv[1], sys.argv[2]
h = tg.Hyperparameters({"TRAIN_SEQ_LEN": seq_len, "TRAIN_BATCH_TOKENS": "393216", "COMPILE": "0",
                        "DATA_PATH": "/tmp/data/datasets/corpus_sp1024",
                        "TOKENIZER_PATH": "/tmp/data/tokenizers/corpus_sp1024.model"})
h.resolve(1)
device = torch.device("cuda")
val_tokens = tg.load_validation_tokens(h.val_files, h.train_seq_len)
luts = tg.build_sentencepiece_luts(tg.load_tokenizer(h), h.vocab_size, device)
model, _, _ = tg.build_model(h, device)
shipped = tg.decompress_int8(open(artifact, "rb").read())
for levels in (None, 127, 121, 116, 111, 106, 96, 83):
    if levels is None:
        state, size = shipped, "shipped"
    else:
        q = tg.quantize_state_dict_int8(shipped, levels)
        buf = io.BytesIO(); torch.save(q, buf); size = len(zlib.compress(buf.getvalue(), 9))
        state = tg.dequantize_state_dict_int8(q)
    model.load_state_dict(state, strict=True)
    t = time.time()
    loss, bpb = tg.eval_val(h, model, 0, 1, device, val_tokens, luts, True)
    print(f"levels:{levels} zlib9:{size} val_loss:{loss:.6f} val_bpb:{bpb:.6f} eval_s:{time.time() - t:.1f}", flush=True)
