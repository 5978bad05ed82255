# Sourced by the scripts in tools/ and by .ci/run: the OpenBLAS pin these machines need (old OpenBLAS builds
# misdetect their CPUs). A value already in the environment wins.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
export OPENBLAS_L2_SIZE="${OPENBLAS_L2_SIZE:-2097152}"
