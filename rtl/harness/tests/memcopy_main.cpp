#include "Vhil_memcopy.h"
#include "hil_harness.h"

int main(int argc, char** argv) { return hil::harness_main<Vhil_memcopy>(argc, argv); }
