// Any bytes as the file of `moas train --config FILE` (and `moas compare --config FILE`): read through the CLI's own
// argument parser (apps/moas/options.cpp), applied to the default options and turned into the library's config
// structs. Bad input must end in UsageError or RuntimeFailure, as the CLI reports it; anything else is a bug.
#include <cstdint>
#include <string>

#include "errors.hpp"
#include "input_file.hpp"
#include "options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static InputFile file;
  std::string path = file.write(data, size);
  std::string program = "moas", command = "train", flag = "--config";
  char *argv[] = {program.data(), command.data(), flag.data(), path.data()};
  for (bool for_compare : {false, true}) {
    try {
      const moas_cli::ParsedOptions parsed = moas_cli::parse_train_arguments(4, argv, 2, for_compare);
      moas_cli::TrainOptions options = moas_cli::default_train_options("out");
      moas_cli::apply_settings(options, parsed.assignments);
      (void)moas_cli::option_values(options);
      (void)moas_cli::make_model_config(options, 65);
      (void)moas_cli::make_adamw_config(options);
    } catch (const moas_cli::UsageError &) {
    } catch (const moas_cli::RuntimeFailure &) {
    }
  }
  return 0;
}
