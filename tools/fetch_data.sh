#!/usr/bin/env bash
# Downloads the text corpora the README's `moas train` examples use into data/ (ignored by git). Safe to run again:
# a file already in place is kept.
#   tools/fetch_data.sh            # data/tinyshakespeare.txt (about 1.1 MB)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$root/data"
url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
target="$data/tinyshakespeare.txt"

download() {  # download URL FILE: through a temporary name, so an interrupted download leaves no partial FILE
  local tmp="$2.part"
  local ok=0
  if command -v curl >/dev/null 2>&1; then
    curl --fail --location --silent --show-error --retry 3 -o "$tmp" "$1" || ok=$?
  elif command -v wget >/dev/null 2>&1; then
    wget --quiet --tries=3 -O "$tmp" "$1" || ok=$?
  else
    echo "fetch_data.sh: neither curl nor wget is installed; install one (apt-get install curl)" >&2
    exit 1
  fi
  if [ "$ok" -ne 0 ] || [ ! -s "$tmp" ]; then
    rm -f "$tmp"
    echo "fetch_data.sh: could not download $1 (no network?); put the text at ${2#"$root"/} by hand" >&2
    exit 1
  fi
  mv "$tmp" "$2"
}

mkdir -p "$data"
if [ -s "$target" ]; then
  echo "data/tinyshakespeare.txt is already there ($(wc -c <"$target") bytes)"
else
  echo "downloading tiny Shakespeare (Karpathy's char-rnn corpus) into data/tinyshakespeare.txt"
  download "$url" "$target"
  echo "data/tinyshakespeare.txt: $(wc -c <"$target") bytes"
fi

cat <<'NOTE'
Note: WikiText-2 is not fetched here (a separate download, licensed CC BY-SA). To train on it, download the raw
WikiText-2 release, save its train split as one UTF-8 text file and pass it with `moas train --data FILE`; any UTF-8
text works, and `--bytes` trains on bytes instead of characters.
NOTE
