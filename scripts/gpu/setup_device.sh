#!/bin/sh
# On the GPU box (Python 3.12 with JAX, no TensorFlow/Keras/gin, no network): install the wheelhouse parts that
# earlier calls copied to $HOME/wh (see ../shared/tools/wheelhouse.sh), once per machine.
set -eu
if [ ! -f "$HOME/site/.done" ]; then
    cat "$HOME"/wh/tf.part* > "$HOME/wh/tensorflow_cpu-2.21.0-cp312-cp312-manylinux_2_27_x86_64.whl"
    rm "$HOME"/wh/tf.part*
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$HOME/site" "$HOME"/wh/*.whl
    touch "$HOME/site/.done"
fi
export PYTHONPATH="$HOME/site:$PWD" KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2
python3 -c "import tensorflow as tf, keras, jax; print('tf', tf.__version__, 'keras', keras.__version__, 'jax', jax.__version__, jax.devices())"
