/* The README's example, built and run by the tests so that it stays true. */
#include <moas.h>
#include <stdio.h>

int main(void) {
  moas_model_config cfg;
  cfg.struct_size = sizeof cfg;           /* always set struct_size, then take the defaults */
  moas_model_config_default(&cfg);        /* the paper's model: 6 layers, 6 heads, 384 wide, T = 256 */
  cfg.n_kv_head = 2;                      /* GQA: 6 query heads share 2 key/value heads */

  moas_model *model;
  if (moas_model_create(&cfg, &model) != MOAS_OK) {
    fprintf(stderr, "%s\n", moas_last_error());
    return 1;
  }
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  moas_adamw_config_default(&adamw);      /* lr 1e-3, betas (0.9, 0.99), weight decay 0.1, clip 1.0 */

  int32_t tokens[2 * 256], targets[2 * 256];
  /* ... fill tokens with ids in [0, 65) and targets with the next ids (-1 = ignore) ... */
  for (int i = 0; i < 2 * 256; i++) { tokens[i] = i % 65; targets[i] = (i + 1) % 65; }

  float loss, aux, grad_norm;
  moas_zero_grad(model);
  moas_forward(model, tokens, targets, 2, 256, /*training=*/1, &loss, &aux);
  moas_backward(model);
  moas_optimizer_step(model, &adamw, &grad_norm);
  printf("loss %.3f, grad norm %.3f\n", loss, grad_norm);

  moas_model_save(model, "model.safetensors", NULL);  /* loads into the PyTorch reference by name */
  moas_model_destroy(model);
  return 0;
}
