// One fusion unit as a module (the array uses the same function from bf_pkg); for unit tests.
// a_sel / w_sel: 0 -> 2-bit, 1 -> 4-bit, 2 -> 8-bit operands.
module bf_fusion_unit (
    input  logic [31:0] act,
    input  logic [31:0] wgt,
    input  logic [1:0]  a_sel,
    input  logic [1:0]  w_sel,
    input  logic        a_signed,
    input  logic        w_signed,
    output logic signed [bf_pkg::FU_W-1:0] psum
);
  bf_pkg::fuse_cfg_t cfg;
  assign cfg = bf_pkg::fuse_config(a_sel, w_sel, a_signed, w_signed);
  assign psum = bf_pkg::fusion_unit(act, wgt, cfg);
endmodule
