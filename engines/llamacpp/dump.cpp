// pv-llamacpp-dump MODEL DIR TOKENS THREADS
//
// One pass of llama.cpp (the library, CPU) over the comma-separated token ids TOKENS, as one
// micro-batch with every position's logits asked for (flash attention off, f16 KV cache), with an eval callback that writes
// every contiguous f32 tensor of the graph to DIR/NAME#K.f32 (K counts tensors of one name:
// `Qcur-3#0` is the projection, a later one the rotated queries). Each file: two int64
// (rows, cols: rows = positions, cols = the rest) then rows x cols float32. The logits of
// every position go to DIR/logits.f32 in the same form. Exit 0 on success, 2 when the model
// or the request is bad, 1 when llama.cpp fails; one line on stderr says why.
//
// pv's adapter (engines/llamacpp, pv-engine-llamacpp) runs this and maps the names onto
// pv's slots; it is not meant to be run by hand.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

struct Dump {
    std::string dir;
    int64_t n_tokens = 0;
    std::map<std::string, int> seen;
    bool failed = false;
};

bool write_rows(const std::string & path, int64_t rows, int64_t cols, const float * data) {
    FILE * f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    int64_t head[2] = {rows, cols};
    bool ok = std::fwrite(head, sizeof head, 1, f) == 1 &&
              std::fwrite(data, sizeof(float), (size_t)(rows * cols), f) == (size_t)(rows * cols);
    return std::fclose(f) == 0 && ok;
}

bool observe(struct ggml_tensor * t, bool ask, void * user) {
    auto * d = static_cast<Dump *>(user);
    if (ask) return true;  // see every node
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) return true;
    const int64_t n = ggml_nelements(t);
    // Rows are positions: the outermost non-unit dimension that equals the token count.
    int64_t rows = 1;
    for (int i = 3; i >= 1; --i) {
        if (t->ne[i] == d->n_tokens) { rows = d->n_tokens; break; }
    }
    if (rows != d->n_tokens || n % rows != 0) return true;
    std::vector<float> buf((size_t)n);
    ggml_backend_tensor_get(t, buf.data(), 0, (size_t)n * sizeof(float));
    std::string name = ggml_get_name(t);
    if (name.empty() || name.find('/') != std::string::npos) return true;
    int k = d->seen[name]++;
    std::string path = d->dir + "/" + name + "#" + std::to_string(k) + ".f32";
    if (!write_rows(path, rows, n / rows, buf.data())) d->failed = true;
    return true;
}

void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: pv-llamacpp-dump MODEL DIR TOKENS THREADS\n");
        return 2;
    }
    const char * model_path = argv[1];
    Dump dump;
    dump.dir = argv[2];
    std::vector<llama_token> tokens;
    for (const char * p = argv[3]; *p;) {
        char * end = nullptr;
        long v = std::strtol(p, &end, 10);
        if (end == p || v < 0) {
            std::fprintf(stderr, "bad token list %s\n", argv[3]);
            return 2;
        }
        tokens.push_back((llama_token)v);
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            std::fprintf(stderr, "bad token list %s\n", argv[3]);
            return 2;
        }
    }
    const int threads = std::atoi(argv[4]);
    if (tokens.empty()) {
        std::fprintf(stderr, "no tokens\n");
        return 2;
    }
    dump.n_tokens = (int64_t)tokens.size();

    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        std::fprintf(stderr, "llama.cpp could not load %s\n", model_path);
        return 2;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (llama_token t : tokens) {
        if (t >= n_vocab) {
            std::fprintf(stderr, "token id %d is out of range (vocabulary of %d)\n", t, n_vocab);
            return 2;
        }
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)std::max<size_t>(tokens.size(), 16);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;  // one micro-batch: every tensor holds every position
    cp.n_seq_max = 1;
    if (threads > 0) {
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
    }
    // As llama-cpp-python drives it (the figures pv's GGUF engine matches): flash attention
    // off, the default f16 KV cache.
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = observe;
    cp.cb_eval_user_data = &dump;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "llama.cpp could not make a context of %zu positions\n", tokens.size());
        return 1;
    }
    llama_batch batch = llama_batch_init((int32_t)tokens.size(), 0, 1);
    for (size_t i = 0; i < tokens.size(); ++i) {
        batch.token[i] = tokens[i];
        batch.pos[i] = (llama_pos)i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;  // every position's logits: no rows dropped before the head
    }
    batch.n_tokens = (int32_t)tokens.size();
    if (llama_decode(ctx, batch) != 0) {
        std::fprintf(stderr, "llama_decode failed\n");
        return 1;
    }
    const float * logits = llama_get_logits(ctx);
    if (!logits || !write_rows(dump.dir + "/logits.f32", dump.n_tokens, n_vocab, logits) || dump.failed) {
        std::fprintf(stderr, "could not write the tensors to %s\n", dump.dir.c_str());
        return 1;
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
