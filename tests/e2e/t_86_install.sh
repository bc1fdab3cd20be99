# make install PREFIX=...: binaries, launcher, configs and the --help text
# with every config key; the installed launcher runs the installed binaries.
install_tree() {
    make -s install PREFIX="$TMP/inst" >/dev/null || return 1
    local i="$TMP/inst"
    for f in bin/clipd bin/clipd-worker bin/clipd-report bin/clipd-launch share/clipd/configs/default.yaml \
             share/doc/clipd/clipd.txt; do
        [ -s "$i/$f" ] || { echo "missing $f"; return 1; }
    done
    # every key the config knows is documented, with its default, in the --help text
    # (run.dir set aside: a `make run` before the tests leaves runs/default, which --check refuses)
    build/clipd --check /dev/null --set run.dir="$TMP/chk" | grep -E '^  [a-z_.]+:' | grep -v -F "$TMP/chk" |
        sed 's/ *#.*//' >"$TMP/keys"
    [ "$(wc -l <"$TMP/keys")" -gt 60 ] || return 1
    # an auto key is settled in what --check prints: sync.reproducible auto -> true
    grep -q -x '  reproducible: auto' <(sed 's/ *#.*//' "$i/share/doc/clipd/clipd.txt") &&
        grep -q -x '  reproducible: true' "$TMP/keys" || { echo "reproducible: not auto in --help, true in --check"; return 1; }
    sed -i 's/^  reproducible: true$/  reproducible: auto/' "$TMP/keys"
    grep -v -F -x -f <(sed 's/ *#.*//' "$i/share/doc/clipd/clipd.txt") "$TMP/keys" && return 1
    timeout 300 "$i/bin/clipd-launch" -n 2 "$i/share/clipd/configs/default.yaml" --set run.dir="$TMP/inst-run" \
        --set train.epochs=1 --set train.steps_per_epoch=5 --set model.hidden=16 >"$TMP/inst.out" 2>&1 || return 1
    grep -q "$i/bin/clipd " "$TMP/inst.out" && [ -s "$TMP/inst-run/final.safetensors" ]
}
check "make install PREFIX: runs from the installed tree; --help documents every key" install_tree

# configs/default.yaml documents every key the config knows, in its section
default_yaml_documents_all() {
    local keyed='/^[a-z]/ { sec = $1 } /^  [a-z_.]+:/ { print sec $1 }'
    build/clipd --check /dev/null --set run.dir="$TMP/chk" | awk "$keyed" | sort >"$TMP/keys.all"
    awk "$keyed" configs/default.yaml | sort >"$TMP/keys.doc"
    [ "$(wc -l <"$TMP/keys.all")" -gt 60 ] || return 1
    comm -23 "$TMP/keys.all" "$TMP/keys.doc" >"$TMP/keys.missing"
    [ ! -s "$TMP/keys.missing" ] || { echo "not in configs/default.yaml:"; cat "$TMP/keys.missing"; return 1; }
}
check "configs/default.yaml documents every config key" default_yaml_documents_all
