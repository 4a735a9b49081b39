/*
 * synth.c — `concord synth`: placeholder until the synthetic population
 * generator lands (src/synth/). Refuses clearly rather than pretending.
 */
#include <stdio.h>

#include "cli.h"

int cmd_synth(int argc, char **argv) {
    fprintf(stderr, "concord: synth: the synthetic population generator is not built yet\n");
    return 1;
}
