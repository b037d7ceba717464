// Dot-product unit: AND + popcount of two Dk-bit words (stage 1), then shift, optional negate and
// accumulate into a 32-bit accumulator with clear (stage 2). A 2-entry result memory
// double-buffers finished results towards the result stage.
//
//   acc <= (clr ? 0 : acc) + (neg ? -(pc << shift) : (pc << shift))
//
// Explicit shift amounts (weight 2^(i+j) for bit planes i, j) rather than Horner form, so that a
// dot product can be split over several K chunks and bit pairs in any order.
module bismo_dpu #(
    parameter int DK = 256
) (
    input  logic          clk,
    input  logic          en1,    // stage 1: a, b valid
    input  logic [DK-1:0] a,
    input  logic [DK-1:0] b,
    input  logic          en2,    // stage 2: popcount valid
    input  logic [4:0]    shift,
    input  logic          neg,
    input  logic          clr,
    input  logic          last,   // write the accumulated value into result slot `slot`
    input  logic          slot,
    output logic [31:0]   res0,
    output logic [31:0]   res1
);
  localparam int PW = $clog2(DK + 1);
  logic [PW-1:0] pc;
  logic [31:0] acc;
  logic [31:0] term, nxt;

  // term/nxt are per-cycle temporaries of the stage-2 arithmetic
  /* verilator lint_off BLKSEQ */
  always_ff @(posedge clk) begin
    if (en1) pc <= PW'($countones(a & b));
    if (en2) begin
      term = 32'(pc) << shift;
      if (neg) term = -term;
      nxt = (clr ? 32'd0 : acc) + term;
      acc <= nxt;
      if (last) begin
        if (slot) res1 <= nxt;
        else res0 <= nxt;
      end
    end
  end
  /* verilator lint_on BLKSEQ */
endmodule
