// Native harness of the BISMO overlay: the shared clock loop, DRAM model and pipe protocol.
#include "Vbismo_top.h"
#include "hil_harness.h"

int main(int argc, char** argv) { return hil::harness_main<Vbismo_top>(argc, argv); }
