/* Trains a small character-level GPT through the C ABI and prints the falling loss.
 *
 *   train_tiny [--data FILE] [--steps N] [--attention mha|gqa|mqa]
 *
 * FILE is any UTF-8/ASCII text (e.g. data/tinyshakespeare.txt from tools/fetch_data.sh); without it a built-in
 * paragraph is used. Bytes are the vocabulary (256 symbols), so no tokenizer is needed. Plain C99
 * (cc -std=c99 -Wall -Wextra -Wpedantic) plus POSIX for its monotonic clock. */
#define _POSIX_C_SOURCE 199309L /* clock_gettime: ISO C99 has no wall clock */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moas.h"

static const char kBuiltinText[] =
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all "
    "resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius Marcius is "
    "chief enemy to the people. All: We know't, we know't. First Citizen: Let us kill him, and we'll have corn at our "
    "own price. Is't a verdict? All: No more talking on't; let it be done: away, away! Second Citizen: One word, good "
    "citizens. First Citizen: We are accounted poor citizens, the patricians good. What authority surfeits on would "
    "relieve us: if they would yield us but the superfluity, while it were wholesome, we might guess they relieved "
    "us humanely; but they think we are too dear: the leanness that afflicts us, the object of our misery, is as an "
    "inventory to particularise their abundance; our sufferance is a gain to them.";

#define CHECK(call)                                                                                  \
  do {                                                                                               \
    moas_status status_ = (call);                                                                    \
    if (status_ != MOAS_OK) {                                                                        \
      fprintf(stderr, "%s failed: %s: %s\n", #call, moas_status_string(status_), moas_last_error()); \
      exit(1);                                                                                       \
    }                                                                                                \
  } while (0)

static char *read_file(const char *path, long *length) {
  FILE *f = fopen(path, "rb");
  char *text;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *length = ftell(f);
  fseek(f, 0, SEEK_SET);
  text = malloc((size_t)*length + 1);
  if (!text || fread(text, 1, (size_t)*length, f) != (size_t)*length) {
    free(text);
    fclose(f);
    return NULL;
  }
  fclose(f);
  return text;
}

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  const char *data_path = NULL, *attention = "gqa";
  int steps = 200, i, step;
  const int batch = 8, seq_len = 64;
  long text_length = (long)strlen(kBuiltinText);
  char *text = NULL;
  const char *corpus = kBuiltinText;
  moas_model_config cfg;
  moas_adamw_config adamw;
  moas_model *model = NULL;
  int32_t *tokens, *targets;
  float first_loss = 0.0f, loss = 0.0f;
  uint64_t n_params = 0;
  unsigned rng = 12345u;
  double start;

  for (i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--data") && i + 1 < argc) data_path = argv[++i];
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--attention") && i + 1 < argc) attention = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--data FILE] [--steps N] [--attention mha|gqa|mqa]\n", argv[0]);
      return 2;
    }
  }
  if (steps < 1) {
    fprintf(stderr, "--steps must be a positive number\n");
    return 2;
  }
  if (data_path) {
    text = read_file(data_path, &text_length);
    if (!text) {
      fprintf(stderr, "cannot read %s: pass a readable text file to --data\n", data_path);
      return 1;
    }
    corpus = text;
  }
  if (text_length < seq_len + 2) {
    fprintf(stderr, "the text has %ld bytes: it needs at least %d\n", text_length, seq_len + 2);
    return 1;
  }

  if (moas_abi_version() != MOAS_ABI_VERSION) {
    fprintf(stderr, "libmoas ABI %u does not match this program's header (%u)\n", moas_abi_version(),
            MOAS_ABI_VERSION);
    return 1;
  }
  cfg.struct_size = sizeof cfg;
  CHECK(moas_model_config_default(&cfg));
  cfg.vocab_size = 256;
  cfg.block_size = seq_len;
  cfg.n_layer = 2;
  cfg.n_head = 4;
  cfg.n_kv_head = !strcmp(attention, "mha") ? 4 : !strcmp(attention, "mqa") ? 1 : 2;
  cfg.n_embd = 128;
  cfg.dropout = 0.0f;
  CHECK(moas_model_create(&cfg, &model));
  CHECK(moas_model_num_parameters(model, &n_params));
  adamw.struct_size = sizeof adamw;
  CHECK(moas_adamw_config_default(&adamw));
  adamw.lr = 2e-3f;

  printf("libmoas %s: %s, %llu parameters, %ld bytes of text, batch %d x %d\n", moas_version_string(), attention,
         (unsigned long long)n_params, text_length, batch, seq_len);
  tokens = malloc(sizeof(int32_t) * (size_t)(batch * seq_len));
  targets = malloc(sizeof(int32_t) * (size_t)(batch * seq_len));
  start = seconds_now();
  for (step = 0; step < steps; step++) {
    int b, t;
    float grad_norm = 0.0f;
    for (b = 0; b < batch; b++) {
      long offset;
      rng = rng * 1664525u + 1013904223u;
      offset = (long)((rng >> 4) % (unsigned)(text_length - seq_len - 1));
      for (t = 0; t < seq_len; t++) {
        tokens[b * seq_len + t] = (unsigned char)corpus[offset + t];
        targets[b * seq_len + t] = (unsigned char)corpus[offset + t + 1];
      }
    }
    CHECK(moas_zero_grad(model));
    CHECK(moas_forward(model, tokens, targets, batch, seq_len, 1, &loss, NULL));
    CHECK(moas_backward(model));
    CHECK(moas_optimizer_step(model, &adamw, &grad_norm));
    if (step == 0) first_loss = loss;
    if (step % 10 == 0 || step == steps - 1) {
      const double elapsed = seconds_now() - start;
      printf("step %4d  loss %.4f  grad norm %.3f  %.0f tok/s\n", step, loss, grad_norm,
             (double)(step + 1) * batch * seq_len / elapsed);
      fflush(stdout);
    }
  }
  printf("loss fell from %.4f to %.4f in %d steps\n", first_loss, loss, steps);
  free(tokens);
  free(targets);
  free(text);
  moas_model_destroy(model);
  return loss < first_loss ? 0 : 1;
}
