// Native Verilator main of the Bit Fusion accelerator: the shared harness (rtl/harness/) runs the
// clock, the DRAM model and the register pipe protocol.
#include "Vbitfusion_top.h"
#include "hil_harness.h"

int main(int argc, char** argv) { return hil::harness_main<Vbitfusion_top>(argc, argv); }
