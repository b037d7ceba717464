// Dot-product unit: AND + popcount of two Dk-bit words (stage 1), then shift, optional negate and
// accumulate into a 32-bit accumulator with clear (stage 2). A 2-entry result memory
// double-buffers finished results towards the result stage.
//
//   acc <= (clr ? 0 : acc) + (neg ? -(pc << shift) : (pc << shift))
//
// Explicit shift amounts (weight 2^(i+j) for bit planes i, j) rather than Horner form, so that a
// dot product can be split over several K chunks and bit pairs in any order.
//
// The popcount is an adder tree over 64-bit lanes written in the classic SWAR form: pairwise sums
// of bits, of 2-bit and of 4-bit fields, then the sum of the eight byte counts (the constant
// multiply is that sum: synthesis turns it into shifted adds). Besides being a plain adder tree,
// this form compiles to one popcnt instruction per lane in the Verilated C++, several times faster
// than $countones there.
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
  localparam int LANES = DK / 64;  // DK is a multiple of 64

  function automatic logic [6:0] pop64(input logic [63:0] x);
    logic [63:0] v;
    v = x - ((x >> 1) & 64'h5555_5555_5555_5555);
    v = (v & 64'h3333_3333_3333_3333) + ((v >> 2) & 64'h3333_3333_3333_3333);
    v = (v + (v >> 4)) & 64'h0f0f_0f0f_0f0f_0f0f;
    v = v * 64'h0101_0101_0101_0101;
    return v[62:56];
  endfunction

  logic [PW-1:0] pc;
  logic [31:0] acc;

  // popcount of a AND b, lane by lane. Not a function of the DK-bit word: Verilator gives every call
  // site of such a function its own DK-bit local, zeroed on every cycle whether the stage runs or not
  // (DM*DN words per cycle, ~1/8 of a bismo-edge cycle with the datapath off; issue 19).
  always_ff @(posedge clk) begin
    if (en1) begin
      logic [PW-1:0] sum;
      sum = '0;
      for (int l = 0; l < LANES; l++) sum = sum + PW'(pop64(a[l*64+:64] & b[l*64+:64]));
      pc <= sum;
    end
  end

  // acc is read only here, so it is assigned blocking: the simulator then keeps no shadow copy of
  // it for the nonblocking update, which it would otherwise copy in and out on every cycle, active
  // or not (DM*DN copies each way per cycle). res0/res1, read by the result stage, stay nonblocking.
  /* verilator lint_off BLKSEQ */
  always_ff @(posedge clk) begin
    if (en2) begin
      acc = (clr ? 32'd0 : acc) + (neg ? -(32'(pc) << shift) : 32'(pc) << shift);
      if (last) begin
        if (slot) res1 <= acc;
        else res0 <= acc;
      end
    end
  end
  /* verilator lint_on BLKSEQ */
endmodule
