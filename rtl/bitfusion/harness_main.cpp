// Native Verilator main of the Bit Fusion accelerator: the shared harness (rtl/harness/) runs the
// clock, the DRAM model and the register pipe protocol.
#include "Vbitfusion_top.h"
#include "Vbitfusion_top___024root.h"
#include "hil_harness.h"

// The model's evaluation as Vbitfusion_top::eval() calls it, without that call's per-call bookkeeping
// (hil_harness.h, RootEval): the design has no classes and runs on one thread.
void Vbitfusion_top___024root___eval(Vbitfusion_top___024root* vlSelf);

// No evaluation at the falling edge (hil_harness.h, LowClock): the design is clocked on the rising
// edge only, and of its outputs only reg_rdata depends combinationally on an input.
int main(int argc, char** argv) {
    return hil::harness_main<Vbitfusion_top>(
        argc, argv, [](Vbitfusion_top& top) { Vbitfusion_top___024root___eval(top.rootp); },
        [](Vbitfusion_top& top) { top.rootp->__Vtrigprevexpr___TOP__clk__0 = 0; });
}
