// Native harness of the Bit Fusion accelerator: the shared clock loop, DRAM model and pipe protocol.
#include "Vbitfusion_top.h"
#include "Vbitfusion_top___024root.h"
#include "hil_harness.h"

// The model's evaluation as Vbitfusion_top::eval() calls it, without that call's per-call bookkeeping
// (hil_harness.h, RootEval): the design has no classes and runs on one thread.
void Vbitfusion_top___024root___eval(Vbitfusion_top___024root* vlSelf);
void Vbitfusion_top___024root___eval_ico(Vbitfusion_top___024root* vlSelf);
void Vbitfusion_top___024root___eval_nba(Vbitfusion_top___024root* vlSelf);

// One evaluation per cycle (hil_harness.h, RiseEval): the design is clocked on the rising edge only
// (its one trigger), and of its outputs only reg_rdata depends combinationally on an input.
static void rise(Vbitfusion_top& top) {
    hil::rise_eval(top.rootp, Vbitfusion_top___024root___eval_ico, Vbitfusion_top___024root___eval_nba);
}

int main(int argc, char** argv) {
    return hil::harness_main<Vbitfusion_top>(
        argc, argv, [](Vbitfusion_top& top) { Vbitfusion_top___024root___eval(top.rootp); }, rise);
}
