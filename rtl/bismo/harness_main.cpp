// Native harness of the BISMO overlay: the shared clock loop, DRAM model and pipe protocol.
#include "Vbismo_top.h"
#include "Vbismo_top___024root.h"
#include "hil_harness.h"

// The model's evaluation as Vbismo_top::eval() calls it, without that call's per-call bookkeeping
// (hil_harness.h, RootEval): the overlay has no classes and runs on one thread.
void Vbismo_top___024root___eval(Vbismo_top___024root* vlSelf);

// No evaluation at the falling edge (hil_harness.h, LowClock): the overlay is clocked on the rising
// edge only, and of its outputs only reg_rdata depends combinationally on an input.
int main(int argc, char** argv) {
    return hil::harness_main<Vbismo_top>(
        argc, argv, [](Vbismo_top& top) { Vbismo_top___024root___eval(top.rootp); },
        [](Vbismo_top& top) { top.rootp->__Vtrigprevexpr___TOP__clk__0 = 0; });
}
