// Native harness of the BISMO overlay: the shared clock loop, DRAM model and pipe protocol.
#include "Vbismo_top.h"
#include "Vbismo_top___024root.h"
#include "hil_harness.h"

// The model's evaluation as Vbismo_top::eval() calls it, without that call's per-call bookkeeping
// (hil_harness.h, RootEval): the overlay has no classes and runs on one thread.
void Vbismo_top___024root___eval(Vbismo_top___024root* vlSelf);
void Vbismo_top___024root___eval_ico(Vbismo_top___024root* vlSelf);
void Vbismo_top___024root___eval_nba(Vbismo_top___024root* vlSelf);

// One evaluation per cycle (hil_harness.h, RiseEval): the overlay is clocked on the rising edge only
// (its one trigger), and of its outputs only reg_rdata depends combinationally on an input.
static void rise(Vbismo_top& top) {
    hil::rise_eval(top.rootp, Vbismo_top___024root___eval_ico, Vbismo_top___024root___eval_nba);
}

int main(int argc, char** argv) {
    return hil::harness_main<Vbismo_top>(
        argc, argv, [](Vbismo_top& top) { Vbismo_top___024root___eval(top.rootp); }, rise);
}
