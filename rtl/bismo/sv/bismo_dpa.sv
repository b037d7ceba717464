// Dot-product array: DM x DN DPUs. LHS word i is broadcast along row i, RHS word j down column j;
// control is broadcast to all DPUs (not systolic).
module bismo_dpa #(
    parameter int DM = 8,
    parameter int DN = 8,
    parameter int DK = 256
) (
    input  logic                     clk,
    input  logic                     en1,
    input  logic [DM-1:0][DK-1:0]    lhs,
    input  logic [DN-1:0][DK-1:0]    rhs,
    input  logic                     en2,
    input  logic [4:0]               shift,
    input  logic                     neg,
    input  logic                     clr,
    input  logic                     last,
    input  logic                     slot,
    output logic [DM-1:0][DN-1:0][31:0] res0,
    output logic [DM-1:0][DN-1:0][31:0] res1
);
  for (genvar i = 0; i < DM; i++) begin : g_row
    for (genvar j = 0; j < DN; j++) begin : g_col
      bismo_dpu #(.DK(DK)) u_dpu (
          .clk(clk), .en1(en1), .a(lhs[i]), .b(rhs[j]), .en2(en2), .shift(shift), .neg(neg),
          .clr(clr), .last(last), .slot(slot), .res0(res0[i][j]), .res1(res1[i][j])
      );
    end
  end
endmodule
